"""Helpers for the service's tests: a real `orchestrator serve` subprocess on a free port, and HTTP to it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fleetkit import ROOT
from pgfixtures import PG_PASSWORD

from orchestrator.devserver import free_port

TOKEN = "test-token-0123456789abcdef"


@dataclass
class Answer:
    status: int
    body: Any
    text: str
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Service:
    process: subprocess.Popen[bytes]
    port: int
    log: Path
    answers: list[Answer] = field(default_factory=list)  # every answer, to look for passwords in

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        token: str | None = TOKEN,
        raw: bytes | None = None,
        timeout: float = 60,
    ) -> Answer:
        data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
        request = urllib.request.Request(self.base + path, data=data, method=method)
        if token is not None:
            request.add_header("Authorization", f"Bearer {token}")
        if data is not None:
            request.add_header("Content-Type", "application/json")
        try:
            with urllib.request.urlopen(request, timeout=timeout) as response:
                status, text, headers = response.status, response.read().decode(), dict(response.headers)
        except urllib.error.HTTPError as error:
            status, text, headers = error.code, error.read().decode(), dict(error.headers)
        try:
            parsed = json.loads(text)
        except ValueError:
            parsed = None
        answer = Answer(status, parsed, text, headers)
        self.answers.append(answer)
        return answer

    def stop(self, timeout: float = 60) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout=timeout)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def start(log: Path, *args: str, env: dict[str, str] | None = None, wait: bool = True) -> Service:
    """`orchestrator serve ARGS --listen 127.0.0.1:<free port>`, stdout and stderr into `log`; waits for /healthz."""
    port = free_port()
    environment = {**os.environ, "PGPW": PG_PASSWORD, "ORCHESTRATOR_API_TOKEN": TOKEN, **(env or {})}
    environment.pop("DATABASE_URL", None)
    with log.open("wb") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "orchestrator", "serve", "--listen", f"127.0.0.1:{port}", *args],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
            cwd=ROOT,
        )
    service = Service(process, port, log)
    if wait:
        deadline = time.monotonic() + 60
        while True:
            if process.poll() is not None:
                raise AssertionError(f"serve exited {process.returncode}:\n{service.log_text()}")
            try:
                if service.call("GET", "/healthz", token=None, timeout=2).status == 200:
                    break
            except OSError:
                pass
            if time.monotonic() > deadline:
                service.stop()
                raise AssertionError(f"serve did not answer:\n{service.log_text()}")
            time.sleep(0.1)
    return service

"""A TCP proxy in front of a test server that injects network faults on cue, at PostgreSQL message boundaries.

    with FaultProxy(pg.port) as proxy:
        url = proxy.url(db_url)                 # the same database, reached through the proxy
        proxy.drop_after_reply("COMMIT")        # the server runs it; its reply is swallowed and the link cut
        proxy.freeze_on("pg_try_advisory_lock") # from that message on nothing moves, new connections included
        proxy.freeze(); proxy.resume()
        proxy.stall_after_login()               # logins complete; every query after them goes unanswered

It runs its own event loop in a thread, so synchronous tests and tests driving their own event loop (or a CLI
subprocess) use it alike. It understands just enough of the protocol to find message boundaries: the untyped
start-up messages (SSLRequest, StartupMessage, CancelRequest) and the typed messages after them.
"""

from __future__ import annotations

import asyncio
import struct
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import urlsplit, urlunsplit

T = TypeVar("T")

_NEGOTIATION_CODES = {80877103, 80877104}  # SSLRequest, GSSENCRequest: the server answers with one byte
_CANCEL_CODE = 80877102
# Messages that carry a statement's outcome: DataRow, CommandComplete, EmptyQueryResponse, ErrorResponse.
_RESULT_TYPES = (b"D", b"C", b"I", b"E")


@dataclass(eq=False)  # compared (and hashed) by identity: links live in a set
class _Link:
    """One client connection and its upstream connection to the server."""

    client: asyncio.StreamWriter
    server: asyncio.StreamWriter
    armed: bool = False  # the reply to the statement just sent is to be swallowed and the link cut
    swallowing: bool = False
    held: list[tuple[asyncio.StreamWriter, bytes]] = field(default_factory=list)  # while frozen
    client_gone: bool = False

    def close(self) -> None:
        for writer in (self.client, self.server):
            writer.close()


class FaultProxy:
    def __init__(self, upstream_port: int, upstream_host: str = "127.0.0.1") -> None:
        self.upstream = (upstream_host, upstream_port)
        self.port = 0
        self.frozen = False
        self.stalled = False  # logins pass; any other message from a client is held (see stall_after_login)
        self.froze = threading.Event()  # set when a freeze_on() pattern was seen
        self.dropped = threading.Event()  # set when a drop_after_reply() cut a link
        self.seen: list[bytes] = []  # every typed message a client sent, in order
        self.logins = 0  # start-up messages seen: one per login attempt
        self.connections = 0  # TCP connections accepted (counted even while frozen)
        self._drop_pattern: bytes | None = None
        self._freeze_pattern: bytes | None = None
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="faultproxy", daemon=True)
        self._server: asyncio.Server | None = None

    # --- control (from any thread) --------------------------------------------------------------------------------

    def __enter__(self) -> FaultProxy:
        self._thread.start()
        self._server = self._call(self._start())
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        self._call(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    def url(self, url: str) -> str:
        """`url` with its host and port replaced by the proxy's."""
        parts = urlsplit(url)
        credentials = parts.netloc.rpartition("@")[0]
        netloc = f"{credentials}@127.0.0.1:{self.port}" if credentials else f"127.0.0.1:{self.port}"
        return urlunsplit(parts._replace(netloc=netloc))

    def drop_after_reply(self, pattern: str) -> None:
        """The next client message containing `pattern` reaches the server; its reply does not reach the client:
        both sides of that link are closed when the reply is complete (the network died at the worst moment)."""
        self._on_loop(lambda: setattr(self, "_drop_pattern", pattern.encode()))

    def freeze_on(self, pattern: str) -> None:
        """Freeze as soon as a client sends a message containing `pattern` (that message is held too)."""
        self._on_loop(lambda: setattr(self, "_freeze_pattern", pattern.encode()))

    def freeze(self) -> None:
        """Stop all traffic both ways; new connections are accepted and then hear nothing (a frozen server)."""
        self._on_loop(lambda: setattr(self, "frozen", True))

    def stall_after_login(self) -> None:
        """Let every login complete, then hold whatever else clients send: a server that accepts connections and
        logins but whose sessions stop answering (a hung backend, a full disk). New connections log in too."""
        self._on_loop(lambda: setattr(self, "stalled", True))

    def resume(self) -> None:
        """Deliver what was held and forward again; links whose client left meanwhile are closed."""
        self._call(self._resume())

    def cut_all(self) -> None:
        """Close every link, both sides."""
        self._call(self._cut_all())

    def _on_loop(self, action: Callable[[], None]) -> None:
        self._call(self._run(action))

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=30)

    @staticmethod
    async def _run(action: Callable[[], None]) -> None:
        action()

    # --- the proxy (on its own loop) ------------------------------------------------------------------------------

    async def _start(self) -> asyncio.Server:
        return await asyncio.start_server(self._accept, "127.0.0.1", 0)

    async def _stop(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._cut_all()

    async def _cut_all(self) -> None:
        for link in list(self._links):
            link.close()
        self._links.clear()

    async def _resume(self) -> None:
        self.frozen = self.stalled = False
        for link in list(self._links):
            held, link.held = link.held, []
            for writer, data in held:
                writer.write(data)
            if link.client_gone:
                link.close()
                self._links.discard(link)

    async def _accept(self, client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        server_reader, server_writer = await asyncio.open_connection(*self.upstream)
        link = _Link(client=client_writer, server=server_writer)
        self._links.add(link)
        await self._pump_client(link, client_reader, server_reader)

    def _forward(self, link: _Link, writer: asyncio.StreamWriter, data: bytes) -> None:
        if self.frozen:
            link.held.append((writer, data))
        else:
            writer.write(data)

    async def _pump_client(
        self, link: _Link, reader: asyncio.StreamReader, server_reader: asyncio.StreamReader
    ) -> None:
        server_pump = None
        try:
            while True:  # untyped start-up messages: length, then a code
                length = struct.unpack("!i", await reader.readexactly(4))[0]
                body = await reader.readexactly(length - 4)
                code = struct.unpack("!i", body[:4])[0]
                self._forward(link, link.server, struct.pack("!i", length) + body)
                if code in _NEGOTIATION_CODES:  # answered with one byte, before any typed message
                    answer = await server_reader.readexactly(1)
                    assert answer == b"N", "the proxy cannot read encrypted traffic: the test server must not use TLS"
                    self._forward(link, link.client, answer)
                elif code != _CANCEL_CODE:
                    self.logins += 1
                    break
            server_pump = asyncio.ensure_future(self._pump_server(link, server_reader))
            while True:
                head = await reader.readexactly(5)
                body = await reader.readexactly(struct.unpack("!i", head[1:])[0] - 4)
                message = head + body
                self.seen.append(message)
                if self._freeze_pattern is not None and self._freeze_pattern in message:
                    self._freeze_pattern, self.frozen = None, True
                    self.froze.set()
                if self._drop_pattern is not None and self._drop_pattern in message:
                    self._drop_pattern, link.armed = None, True
                if self.stalled and message[:1] != b"p":  # password / SASL messages are the login: they pass
                    link.held.append((link.server, message))
                    continue
                self._forward(link, link.server, message)
        except (asyncio.IncompleteReadError, ConnectionError):
            link.client_gone = True
            if not self.frozen:
                link.close()
                self._links.discard(link)
        if server_pump is not None:
            await server_pump

    async def _pump_server(self, link: _Link, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                head = await reader.readexactly(5)
                message = head + await reader.readexactly(struct.unpack("!i", head[1:])[0] - 4)
                # Armed, the statement's outcome (rows, completion, error) and the rest of its reply are
                # swallowed, and the link cut when the reply ends; what comes before (a Parse/Describe answer) passes.
                link.swallowing |= link.armed and message[:1] in _RESULT_TYPES
                if not link.swallowing:
                    self._forward(link, link.client, message)
                elif message[:1] == b"Z":  # ReadyForQuery ends the reply
                    link.close()
                    self._links.discard(link)
                    self.dropped.set()
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            if not self.frozen:
                link.close()
                self._links.discard(link)

"""The service's bearer token: from $ORCHESTRATOR_API_TOKEN or --token-file, compared in constant time."""

from __future__ import annotations

import hmac
import os
from pathlib import Path

from ..errors import Unauthorized, UsageError

TOKEN_ENV = "ORCHESTRATOR_API_TOKEN"
MIN_TOKEN_LENGTH = 16  # a guessable token is no token: e.g. `openssl rand -hex 32` gives 64


def load_token(token_file: Path | None) -> str:
    """The token (--token-file wins over the environment). Raises UsageError (exit 2) when there is none."""
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise UsageError(
                f"--token-file {token_file}: cannot be read ({exc.__class__.__name__})",
                hint="a file holding the token on one line (in Kubernetes: a Secret mounted as a file)",
            ) from None
    else:
        token = os.environ.get(TOKEN_ENV, "").strip()
    if not token:
        raise UsageError(
            "orchestrator serve needs an API token: every /v1 request must carry it",
            hint=f"set ${TOKEN_ENV} or give --token-file PATH (e.g. a token made with `openssl rand -hex 32`)",
        )
    if len(token) < MIN_TOKEN_LENGTH or not token.isprintable():
        raise UsageError(
            f"the API token must be at least {MIN_TOKEN_LENGTH} printable characters",
            hint="make one with `openssl rand -hex 32`",
        )
    return token


def check(authorization: str | None, token: str) -> None:
    """Raise Unauthorized unless the header is `Bearer <token>` (compared in constant time)."""
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), token.encode()):
        raise Unauthorized(
            "missing or wrong API token",
            hint="send `Authorization: Bearer <token>`, the token the service was started with",
        )

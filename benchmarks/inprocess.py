"""Drive the API through its ASGI interface in this process: no sockets, no server, no load generator.

What such a request costs is the framework's and our code's CPU alone, which is what
``benchmarks.stages`` breaks down and ``benchmarks.instructions`` counts.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any


class InProcess:
    """Sends ``GET`` requests to an ASGI app and keeps the messages of the last answer."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.sent: list[MutableMapping[str, Any]] = []

    async def _send(self, message: MutableMapping[str, Any]) -> None:
        self.sent.append(message)

    @staticmethod
    async def _receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    def scope(self, path: str) -> dict[str, Any]:
        """The scope uvicorn would pass for a plain ``GET path`` over HTTP/1.1."""
        return {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": [(b"host", b"bench")],
            "client": ("127.0.0.1", 1),
            "server": ("127.0.0.1", 80),
            "app": self.app,
        }

    async def get(self, path: str) -> int:
        """``GET path``; the status code of the answer."""
        self.sent.clear()
        await self.app(self.scope(path), self._receive, self._send)
        return int(self.sent[0]["status"])

"""uvicorn's httptools protocol with one socket write per answer instead of two.

uvicorn writes an answer's status line and headers when the app sends
``http.response.start``, and its body when the app sends ``http.response.body``: two
``write`` calls, and uvloop makes each one a ``send`` system call at once. On loopback, a
``send`` runs the receiver's side of TCP too and wakes it, while holding the GIL: in a profile
of the server at 1,500 single-reading requests a second, the two writes were a quarter of the
event loop's GIL time, the first (the headers) three times the second.

:class:`CoalescingHttpTools` gives the protocol a transport (:class:`_Coalescing`) that keeps
what is written during one turn of the event loop and writes it at once at the end of the turn
(``loop.call_soon``): the headers and the body an app sends one after the other leave in one
``send``. Nothing waits longer than the turn in which it was written; ``close``, ``abort`` and
``write_eof`` write (or drop, for ``abort``) what is kept first, so the order of the bytes and
of the close is the transport's. Every other attribute is the real transport's.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["CoalescingHttpTools"]


class _Coalescing:
    """A transport that writes what it is given at the end of the loop's turn (see the module
    docstring); everything but the writes is the wrapped transport's."""

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._kept: list[bytes] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if not self._kept:
            self._loop.call_soon(self._flush)
        self._kept.append(bytes(data))

    def writelines(self, lines: Any) -> None:
        for data in lines:
            self.write(data)

    def _flush(self) -> None:
        kept, self._kept = self._kept, []
        if kept and not self._transport.is_closing():
            self._transport.write(kept[0] if len(kept) == 1 else b"".join(kept))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._kept))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._kept = []
        self._transport.abort()


class CoalescingHttpTools(HttpToolsProtocol):
    """uvicorn's httptools protocol over a :class:`_Coalescing` transport."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        # (uvloop's transports are asyncio.Transport in all but their classes.)
        super().connection_made(cast(asyncio.Transport, _Coalescing(transport, self.loop)))

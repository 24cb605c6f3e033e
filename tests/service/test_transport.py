"""One socket write per answer: the transport under ``weightstream serve`` keeps what is
written during one turn of the event loop and writes it at once at the end of the turn."""

from __future__ import annotations

import asyncio
from typing import Any

from weightstream.service.transport import CoalescingHttpTools, _Coalescing


class _Recorder:
    """A transport that records what is done to it."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.closing = False

    def write(self, data: bytes) -> None:
        self.calls.append(("write", bytes(data)))

    def is_closing(self) -> bool:
        return self.closing

    def close(self) -> None:
        self.calls.append(("close", None))
        self.closing = True

    def abort(self) -> None:
        self.calls.append(("abort", None))
        self.closing = True

    def write_eof(self) -> None:
        self.calls.append(("eof", None))

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


def test_writes_of_one_turn_leave_in_one_write_in_order() -> None:
    """Headers then body written in one turn reach the socket as one write, in order; a write
    of a later turn is a write of its own."""

    async def run() -> list[tuple[str, Any]]:
        real = _Recorder()
        t = _Coalescing(real, asyncio.get_running_loop())  # type: ignore[arg-type]
        t.write(b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n")
        t.write(b"")
        t.write(memoryview(b"{}"))
        assert real.calls == [] and t.get_write_buffer_size() == 40
        await asyncio.sleep(0)
        t.write(b"next")
        await asyncio.sleep(0)
        return real.calls

    calls = asyncio.run(run())
    assert calls == [
        ("write", b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\n\r\n{}"),
        ("write", b"next"),
    ]


def test_close_writes_what_is_kept_first_and_abort_drops_it() -> None:
    """close() and write_eof() write what is kept before they act; abort() drops it; other
    attributes are the real transport's."""

    async def run() -> tuple[list[tuple[str, Any]], list[tuple[str, Any]]]:
        loop = asyncio.get_running_loop()
        closed, aborted = _Recorder(), _Recorder()
        a = _Coalescing(closed, loop)  # type: ignore[arg-type]
        a.write(b"answer")
        a.write_eof()
        a.close()
        b = _Coalescing(aborted, loop)  # type: ignore[arg-type]
        b.write(b"lost")
        b.abort()
        assert a.get_extra_info("peername") == ("127.0.0.1", 1)
        await asyncio.sleep(0)  # the scheduled flushes find nothing left
        return closed.calls, aborted.calls

    closed, aborted = asyncio.run(run())
    assert closed == [("write", b"answer"), ("eof", None), ("close", None)]
    assert aborted == [("abort", None)]


def test_the_protocol_answers_a_request_in_one_write() -> None:
    """uvicorn's httptools protocol over the transport: a whole answer (status line, headers,
    body) in one write."""
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        await send(
            {"type": "http.response.start", "status": 200, "headers": [(b"content-length", b"2")]}
        )
        await send({"type": "http.response.body", "body": b"{}"})

    async def run() -> list[tuple[str, Any]]:
        config = Config(app, http=CoalescingHttpTools, lifespan="off", log_config=None)
        config.load()
        protocol = CoalescingHttpTools(config, ServerState(), {})
        real = _Recorder()
        protocol.connection_made(real)  # type: ignore[arg-type]
        protocol.data_received(b"GET / HTTP/1.1\r\nhost: x\r\n\r\n")
        for _ in range(10):
            await asyncio.sleep(0)
        return real.calls

    calls = asyncio.run(run())
    writes = [data for kind, data in calls if kind == "write"]
    assert len(writes) == 1
    assert writes[0].startswith(b"HTTP/1.1 200 OK\r\n") and writes[0].endswith(b"\r\n\r\n{}")

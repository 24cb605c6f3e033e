"""Frames kept by key, in memory while they are few and on disk once they are many.

A file run sorts more rows than it can hold: the readings by partition of the processing
order (:mod:`weightstream.ingest.partitions`). It adds frames under an integer key in any
order and reads each key's frames back later, in the order they were added. A
:class:`Spill` holds them in memory until it holds more than ``memory_rows`` rows; then it
writes them all to disk and writes every later frame there at once. (The results file's
lines are put back in row order by :mod:`weightstream.engine.line_runs`, which takes its
temporary directory from :func:`spill_directory` too.)

On disk a key is one file in a private temporary directory (``$TMPDIR`` or the given
directory, removed by :meth:`Spill.close`): the frames are appended to it as Arrow IPC
streams, each preceded by its length in bytes, and read back one after the other. Arrow IPC
because it is polars' own format: written and read at memory speed, with no conversion of a
column's type or text. The lengths are in the file, not in memory: a key's frames are as many
as the blocks of the input (a block's readings go to every partition), and so are the keys,
so a table of frames grows with the square of the file (at 10 M rows, 243,000 frames; at 50
M, 6 million), where a row count per key grows with the file only.

A process killed before :meth:`Spill.close` (SIGKILL, a crash) leaves its directory behind.
The directory's name holds the process id (``weightstream-spill-PID-*``), and the next spill
made in the same place removes every such directory whose process no longer exists.
"""

from __future__ import annotations

import io
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from pathlib import Path

import polars as pl

from weightstream.errors import StorageError
from weightstream.results_file import output_error

__all__ = ["Spill", "read_key_file", "remove_stale", "spill_directory"]

_PREFIX = "weightstream-spill-"
#: The length of a frame's stream, before the stream in its key's file.
_LENGTH = struct.Struct("<Q")


class Spill:
    """Frames by key: ``add`` in any order, ``frames`` / ``take`` them back in added order."""

    def __init__(self, memory_rows: int, directory: Path | None = None) -> None:
        self.memory_rows = memory_rows
        self._parent = directory
        self._dir: Path | None = None
        self._held: dict[int, list[pl.DataFrame]] = {}
        self._held_rows = 0
        #: Rows per key (on disk, a key has a file exactly when it has rows).
        self._rows: dict[int, int] = {}

    @property
    def on_disk(self) -> bool:
        """Whether the frames went to disk (more than ``memory_rows`` rows were added)."""
        return self._dir is not None

    def used_keys(self) -> list[int]:
        """The keys with at least one row, in increasing order."""
        return sorted(k for k, n in self._rows.items() if n)

    def rows(self, key: int) -> int:
        return self._rows.get(key, 0)

    def add(self, key: int, frame: pl.DataFrame) -> None:
        """Keep ``frame`` under ``key`` (after the key's earlier frames)."""
        if not frame.height:
            return
        self._rows[key] = self._rows.get(key, 0) + frame.height
        if self._dir is not None:
            self._write(key, frame)
            return
        self._held.setdefault(key, []).append(frame)
        self._held_rows += frame.height
        if self._held_rows > self.memory_rows:
            self._dir = spill_directory(self._parent)
            held, self._held = self._held, {}
            for k, frames in held.items():
                for f in frames:
                    self._write(k, f)
            self._held_rows = 0

    def frames(self, key: int) -> Iterator[pl.DataFrame]:
        """The frames of ``key``, one at a time, in the order they were added."""
        if self._dir is None:
            yield from self._held.get(key, [])
            return
        if not self._rows.get(key):
            return
        yield from read_key_file(self._path(key))

    def key_file(self, key: int) -> Path | None:
        """The file that holds ``key``'s frames, once the spill is on disk and the key has
        rows (else None): another process reads it with :func:`read_key_file` while this
        spill is open."""
        if self._dir is None or not self._rows.get(key):
            return None
        return self._path(key)

    def take(self, key: int) -> pl.DataFrame | None:
        """Every frame of ``key`` as one frame (None if it has none); the key is emptied."""
        frames = list(self.frames(key))
        if self._dir is None:
            self._held.pop(key, None)
            self._held_rows -= self._rows.get(key, 0)
        elif self._rows.get(key):
            self._path(key).unlink(missing_ok=True)
        self._rows.pop(key, None)
        if not frames:
            return None
        # Not rechunked: one copy of the rows, in as many chunks as were added.
        return frames[0] if len(frames) == 1 else pl.concat(frames, how="vertical", rechunk=False)

    def close(self) -> None:
        """Forget every frame and remove the directory on disk."""
        self._held.clear()
        self._rows.clear()
        self._held_rows = 0
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> Spill:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _path(self, key: int) -> Path:
        assert self._dir is not None
        return self._dir / f"{key}.arrows"

    def _write(self, key: int, frame: pl.DataFrame) -> None:
        path = self._path(key)
        # The record's buffer is made about its final size at once: a BytesIO grown by
        # polars' many small writes copied itself over and over (a 14,000-row frame took 6-8
        # ms of CPU to write, 3 ms so).
        record = io.BytesIO(bytes(_LENGTH.size + int(frame.estimated_size()) * 3 // 2 + 4096))
        record.seek(_LENGTH.size)
        frame.write_ipc_stream(record)
        size = record.tell()
        _LENGTH.pack_into(record.getbuffer(), 0, size - _LENGTH.size)
        try:
            with path.open("ab") as fh, record.getbuffer()[:size] as written:
                fh.write(written)
        except OSError as exc:  # a full disk is exit 73, as for any file we write
            raise output_error(path, exc, "spill file") from None


def spill_directory(parent: Path | None = None) -> Path:
    """A new private directory for temporary files in ``parent`` (``$TMPDIR`` by default),
    named with this process's id; stale ones of dead processes there are removed first."""
    where = Path(parent or tempfile.gettempdir())
    try:
        remove_stale(where)
        return Path(tempfile.mkdtemp(prefix=f"{_PREFIX}{os.getpid()}-", dir=where))
    except OSError as exc:
        raise output_error(where, exc, "spill directory in") from None


def read_key_file(path: str | Path) -> Iterator[pl.DataFrame]:
    """The frames of one key's file (:meth:`Spill.key_file`), one at a time, in added order."""
    try:
        with Path(path).open("rb") as fh:
            while header := fh.read(_LENGTH.size):
                (length,) = _LENGTH.unpack(header)
                yield pl.read_ipc_stream(io.BytesIO(fh.read(length)))
    except OSError as exc:
        raise StorageError(f"cannot read spill file {path}: {exc.strerror or exc}") from None


def remove_stale(parent: Path, prefix: str = _PREFIX) -> None:
    """Remove the directories ``PREFIX<pid>-*`` in ``parent`` whose process no longer
    exists (a spill's, by default): what a killed process left behind."""
    for entry in parent.glob(f"{prefix}*-*"):
        pid = entry.name[len(prefix) :].partition("-")[0]
        if pid.isdigit() and not _alive(int(pid)) and entry.is_dir():
            shutil.rmtree(entry, ignore_errors=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: alive
        return True
    return True

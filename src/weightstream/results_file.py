"""Writing an output file (the results CSV) without destroying anything on the way.

Invariants I10 (nothing destroyed) and I13 (safe display), and I6 for the failures.

Before the work (:func:`output_path_problem`)
    The CLI asks, for every output path, whether it may be written at all: not the input, the
    database or its ``-wal`` / ``-shm`` / ``-journal`` (compared by resolved path and by device
    and inode, so a symlink or a hard link is caught), not an existing device, directory or
    fifo, and only in an existing directory where a file can be created (checked with a probe
    file, which also catches a read-only file system when running as root). A problem is found
    before any database is created or any reading processed.
Writing (:func:`write_csv`)
    Rows go to ``.NAME.tmp-PID`` beside the target, which is fsynced, renamed over the target
    with :func:`os.replace` and the directory fsynced: a reader sees the old file or the new
    one, never a torn one. The temporary file is removed on any failure, on ``KeyboardInterrupt``
    (SIGINT) and on SIGTERM / SIGHUP: while the file is written those signals raise inside the
    writer, and once the file is removed the signal is delivered again under its previous
    handler, so the process still ends the way the sender meant. A target that exists and is
    not a regular file is refused here too (the library path has no CLI in front of it).
Failures
    An ``OSError`` while writing becomes :class:`~weightstream.errors.StorageFullError`
    (no space or quota: exit 73) or :class:`~weightstream.errors.StorageError` (exit 74), with a
    one-line message naming the file and the system's reason, never a value from the data.
Spreadsheet safety
    A cell of a *text* column that begins with ``=``, ``+``, ``-``, ``@``, a tab or a carriage
    return is written with a leading apostrophe, so a spreadsheet shows it as text instead of
    running it as a formula (the usual CSV-injection defence). Numeric columns
    (:data:`NUMERIC_FIELDS`) are never touched: a trend of ``-0.5`` stays a number.
    ``raw=True`` (``process --raw``) writes every cell exactly as stored, for programs.
"""

from __future__ import annotations

import csv
import errno
import io
import os
import signal
import stat
import tempfile
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from types import FrameType
from typing import Any, BinaryIO, Final

from weightstream.errors import StorageError, StorageFullError
from weightstream.store.columns import RESULTS, Kind

__all__ = [
    "NUMERIC_FIELDS",
    "FORMULA_PREFIXES",
    "neutralise",
    "output_error",
    "output_path_problem",
    "protected_paths",
    "write_csv",
    "write_atomic",
    "csv_lines",
]

#: Columns of the results file that hold numbers (or nothing); never neutralised.
NUMERIC_FIELDS: Final = frozenset(
    c.file for c in RESULTS.file_columns if c.kind in (Kind.INTEGER, Kind.REAL)
)
#: A text cell starting with one of these is read as a formula by spreadsheet programs.
FORMULA_PREFIXES: Final = ("=", "+", "-", "@", "\t", "\r")
_FULL: Final = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
_SIGNALS: Final = tuple(
    getattr(signal, name) for name in ("SIGTERM", "SIGHUP") if hasattr(signal, name)
)


def neutralise(cell: object) -> object:
    """A text cell a spreadsheet would run as a formula, with a leading apostrophe.

    >>> neutralise("=HYPERLINK(1)"), neutralise("-0.5"), neutralise("abc"), neutralise(-0.5)
    ("'=HYPERLINK(1)", "'-0.5", 'abc', -0.5)
    """
    if isinstance(cell, str) and cell.startswith(FORMULA_PREFIXES):
        return "'" + cell
    return cell


def output_error(path: Path, exc: OSError, what: str = "results file") -> StorageError:
    """The typed error for a failed write of an output file (73 when the disk is full)."""
    reason = exc.strerror or type(exc).__name__
    message = f"cannot write {what} {path}: {reason}"
    if exc.errno in _FULL:
        return StorageFullError(message, operation="write output")
    return StorageError(message, operation="write output")


def protected_paths(input_path: Path | None, db: Path | None) -> dict[str, list[Path]]:
    """What an output must never be: the input, and the database with its side files."""
    keep: dict[str, list[Path]] = {}
    if input_path is not None:
        keep["the input file"] = [input_path]
    if db is not None:
        names = [db]
        for base in {str(db), str(db.resolve())}:
            names += [Path(base + side) for side in ("-wal", "-shm", "-journal")]
        keep["the database"] = names
    return keep


def output_path_problem(
    path: Path, *, keep: Mapping[str, Iterable[Path]], option: str = "--out"
) -> str | None:
    """Why ``path`` must not be written as an output, or None when it may be.

    ``keep`` maps a description ("the input file") to paths that must never be overwritten.
    """
    try:
        target = os.stat(path)
    except FileNotFoundError:
        target = None
    except OSError as exc:
        return f"{option} {path}: {exc.strerror or exc}"
    if target is not None and not stat.S_ISREG(target.st_mode):
        kind = _kind(target.st_mode)
        return f"{option} {path} is {kind}, not a regular file; refusing to replace it"
    resolved = path.resolve()
    for what, paths in keep.items():
        for kept in paths:
            if resolved == kept.resolve() or (target is not None and _same_file(target, kept)):
                return f"{option} {path} is {what}; refusing to overwrite it"
    parent = path.parent
    if not parent.exists():
        return f"{option} {path}: directory {parent} does not exist"
    if not parent.is_dir():
        return f"{option} {path}: {parent} is not a directory"
    try:
        fd, probe = tempfile.mkstemp(prefix=f".{path.name}.probe-", dir=parent)
    except OSError as exc:
        return f"{option} {path}: cannot create files in {parent}: {exc.strerror or exc}"
    os.close(fd)
    with suppress(OSError):
        os.unlink(probe)
    return None


def write_csv(
    out: Path,
    header: Sequence[str],
    rows: Iterable[tuple[object, ...]],
    *,
    raw: bool = False,
    on_row: Callable[[tuple[object, ...]], None] | None = None,
) -> int:
    """Write ``header`` and ``rows`` to ``out`` atomically; return the number of rows.

    ``on_row`` sees each row as given (before neutralisation). See the module docstring for
    the guarantees and the errors.
    """
    text_columns = [i for i, name in enumerate(header) if name not in NUMERIC_FIELDS]

    def fill(binary: BinaryIO) -> int:
        count = 0
        handle = io.TextIOWrapper(binary, encoding="utf-8", newline="")
        writer = csv.writer(handle)
        writer.writerow(header)
        for row in rows:
            if on_row is not None:
                on_row(row)
            writer.writerow(row if raw else _neutral_row(row, text_columns))
            count += 1
        handle.flush()
        handle.detach()
        return count

    return write_atomic(out, fill)


def csv_lines(
    header: Sequence[str], rows: Iterable[tuple[object, ...]], *, raw: bool = False
) -> list[str]:
    """Each row as the line :func:`write_csv` writes for it (``csv.writer``, CRLF ended).

    >>> csv_lines(["row", "user_id"], [(2, "=x"), (3, "a,b")])
    ["2,'=x\\r\\n", '3,"a,b"\\r\\n']
    """
    text_columns = [i for i, name in enumerate(header) if name not in NUMERIC_FIELDS]
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    lines: list[str] = []
    for row in rows:
        writer.writerow(row if raw else _neutral_row(row, text_columns))
        lines.append(buffer.getvalue())
        buffer.seek(0)
        buffer.truncate()
    return lines


def write_atomic(out: Path, fill: Callable[[BinaryIO], int]) -> int:
    """Write ``out`` atomically with ``fill`` (which writes the bytes and returns a count).

    The temporary file, fsync, rename, signal and error handling of the module docstring.
    """
    out = Path(out)
    _refuse_special(out)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        with _signals_raise():
            with suppress(FileNotFoundError):
                tmp.unlink()  # a leftover of a killed process that had our pid
            fd = _create_temp(tmp)
            with open(fd, "wb") as handle:
                count = fill(handle)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, out)
            _fsync_directory(out.parent)
    except _Terminated as stop:
        _remove(tmp)
        signal.raise_signal(stop.signum)  # the previous handler is back: usually, death
        raise SystemExit(128 + stop.signum) from None  # a handler that let us live
    except OSError as exc:
        _remove(tmp)
        raise output_error(out, exc) from None
    except BaseException:
        _remove(tmp)
        raise
    return count


def _neutral_row(row: tuple[object, ...], text_columns: list[int]) -> list[object]:
    cells = list(row)
    for i in text_columns:
        if i < len(cells):
            cells[i] = neutralise(cells[i])
    return cells


def _create_temp(tmp: Path) -> int:
    """Create the temporary file exclusively, never through a symlink planted at its name."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    return os.open(tmp, flags, 0o666)


def _refuse_special(out: Path) -> None:
    try:
        mode = os.stat(out).st_mode
    except FileNotFoundError:
        return
    except OSError as exc:
        raise output_error(out, exc) from None
    if not stat.S_ISREG(mode):
        raise StorageError(
            f"refusing to replace {out}: it is {_kind(mode)}, not a regular file",
            operation="write output",
        )


def _remove(tmp: Path) -> None:
    with suppress(OSError):
        tmp.unlink()


def _fsync_directory(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    except OSError as exc:  # file systems that cannot fsync a directory
        if exc.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EBADF):
            raise
    finally:
        os.close(fd)


class _Terminated(BaseException):
    """SIGTERM / SIGHUP arrived while an output file was being written."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"signal {signum}")
        self.signum = signum


@contextmanager
def _signals_raise() -> Iterator[None]:
    """While inside: SIGTERM and SIGHUP raise :class:`_Terminated` (main thread only).

    A signal that is ignored (``SIG_IGN``, e.g. under ``nohup``) stays ignored.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum: int, frame: FrameType | None) -> None:
        raise _Terminated(signum)

    previous: dict[int, Any] = {}
    try:
        for sig in _SIGNALS:
            if signal.getsignal(sig) is not signal.SIG_IGN:
                previous[sig] = signal.signal(sig, handler)
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def _same_file(st: os.stat_result, other: Path) -> bool:
    try:
        o = os.stat(other)
    except OSError:
        return False
    return (st.st_dev, st.st_ino) == (o.st_dev, o.st_ino)


def _kind(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a directory"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISFIFO(mode):
        return "a fifo"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a special file"

"""An export's bytes as blocks of lines, and the plain lines of a block, found on its bytes.

The byte-level half of :mod:`weightstream.ingest.columnar`: cutting a file into blocks that
end at a line end (:func:`blocks`), and telling, with a few passes of numpy or ``bytes``
over a block, which of its lines polars may read (:func:`plain_lines`) and whether any field
may need trimming (:func:`padded`). Nothing here judges a field: that is the columnar
reader's and, for every line set aside here, the line reader's.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Final

import numpy as np

__all__ = ["blocks", "line_count", "padded", "plain_lines"]


def blocks(path: Path, offset: int, size: int) -> Iterator[tuple[int, bytes]]:
    """The data bytes in blocks that end at a line end, each with the number of its first line.

    A block is cut after its last ``\\n``; a ``\\r`` at the cut stays with the next block.
    """
    with path.open("rb") as fh:
        # Lines before the data (blank lines, the header) end with a terminator each.
        head = fh.read(offset)
        line = 1 + len(head.splitlines())
        carry = b""
        while True:
            chunk = fh.read(size)
            if not chunk:
                break
            data = carry + chunk
            cut = data.rfind(b"\n") + 1
            if cut == 0:  # one line longer than a block: keep reading
                carry = data
                continue
            block, carry = data[:cut], data[cut:]
            yield line, block
            line += line_count(block)
        if carry:
            yield line, carry


def line_count(block: bytes) -> int:
    """``len(block.splitlines())`` for a block that ends with ``\\n``, without the list.

    >>> blocks = (b"a\\n", b"a\\r\\n\\rb\\n", b"\\r\\r\\n")
    >>> all(line_count(b) == len(b.splitlines()) for b in blocks)
    True
    """
    lines = int(np.count_nonzero(np.frombuffer(block, dtype=np.uint8) == 0x0A))
    if b"\r" in block:  # a CR ends a line too, except the CR of a CRLF
        lines += block.count(b"\r") - block.count(b"\r\n")
    return lines


def padded(block: bytes) -> bool:
    """Whether a field of a block of plain lines may begin or end with ASCII white space.

    False when the block has no tab, vertical tab or form feed, and no space next to a comma
    or a line's start or end (a space inside a field, as in ``2025-01-01 08:00:00``, is
    fine). A CR is no longer in a block read by polars (the columnar reader's ``fast``).

    >>> padded(b"a,2025-01-01 08:00:00\\n"), padded(b"a ,b\\n"), padded(b"a,b\\n c,d\\n")
    (False, True, True)
    """
    if b"\t" in block or b"\x0b" in block or b"\x0c" in block or b"\r" in block:
        return True
    data = np.frombuffer(block, dtype=np.uint8)
    spaces = np.flatnonzero(data == 0x20)
    if not len(spaces):
        return False
    if spaces[0] == 0 or spaces[-1] == len(data) - 1:
        return True
    near = np.concatenate((data[spaces - 1], data[spaces + 1]))
    return bool(np.any((near == 0x2C) | (near == 0x0A)))


def plain_lines(
    block: bytes, first_line: int, width: int, *, count: bool = False
) -> tuple[np.ndarray, list[tuple[int, bytes]], bytes, bool]:
    """Split a block (LF line ends, ending with one) into its plain lines and the others.

    Returns the numbers of the plain lines, the other lines with their numbers, the plain
    lines as one block, and whether their fields were counted line by line. A line is plain
    if it has ``width - 1`` commas and no quote or NUL, and is not blank.

    Lines with a quote or NUL byte (rare) are found from those bytes. Commas are counted
    line by line only with ``count`` or if the other lines' total is not ``width - 1`` a
    line: with the right total, a line with too few commas (a blank line too) means another
    with too many, which polars refuses (the columnar reader's ``_texts``); the caller then
    asks again with ``count``. (The first line sets polars' field count: ``_texts`` checks
    it.)
    """
    data = np.frombuffer(block, dtype=np.uint8)
    if not count:
        spans = _strange_lines(block, data)
        lines = int(np.count_nonzero(data == 0x0A))
        commas = int(np.count_nonzero(data == 0x2C))
        commas -= sum(block.count(b",", start, end) for start, end in spans)
        if commas == (lines - len(spans)) * (width - 1):
            if not spans:
                return np.arange(first_line, first_line + lines, dtype=np.int64), [], block, False
            return _cut(block, data, first_line, lines, spans)
    ends = np.flatnonzero(data == 0x0A)
    starts = np.concatenate(([0], ends[:-1] + 1))
    numbers = np.arange(first_line, first_line + len(ends), dtype=np.int64)
    per_line = np.add.reduceat(data == 0x2C, starts, dtype=np.int32)
    strange = np.add.reduceat((data == 0x22) | (data == 0x00), starts, dtype=np.int32)
    # reduceat over an empty line (start == its end) reads the terminator: counts are 0 there
    plain = (per_line == width - 1) & (strange == 0) & (ends > starts)
    if plain.all():
        return numbers, [], block, True
    odd = [(int(numbers[i]), block[starts[i] : ends[i] + 1]) for i in np.flatnonzero(~plain)]
    keep = np.flatnonzero(plain)
    if not len(keep):
        return numbers[plain], odd, b"", True
    # Contiguous runs of plain lines, copied run by run.
    breaks = np.flatnonzero(np.diff(keep) != 1)
    run_first = np.concatenate(([keep[0]], keep[breaks + 1]))
    run_last = np.concatenate((keep[breaks], [keep[-1]]))
    parts = [block[starts[a] : ends[b] + 1] for a, b in zip(run_first, run_last, strict=True)]
    return numbers[plain], odd, b"".join(parts), True


#: Quotes and NULs found one by one up to this many in a block (else by numpy).
_FEW_STRANGE: Final = 4096


def _strange_lines(block: bytes, data: np.ndarray) -> list[tuple[int, int]]:
    """The (start, end) of each line with a quote or NUL byte, in order (end: at its LF)."""
    hits: list[int] = []
    for byte in (b'"', b"\x00"):
        at = block.find(byte)
        while at >= 0 and len(hits) <= _FEW_STRANGE:
            hits.append(at)
            at = block.find(byte, block.find(b"\n", at) + 1)  # one hit a line is enough
    if len(hits) > _FEW_STRANGE:
        hits = np.flatnonzero((data == 0x22) | (data == 0x00)).tolist()
    spans: list[tuple[int, int]] = []
    for at in sorted(hits):
        if spans and at <= spans[-1][1]:
            continue
        spans.append((block.rfind(b"\n", 0, at) + 1, block.find(b"\n", at)))
    return spans


def _cut(
    block: bytes, data: np.ndarray, first_line: int, lines: int, spans: list[tuple[int, int]]
) -> tuple[np.ndarray, list[tuple[int, bytes]], bytes, bool]:
    """The block without the lines at ``spans`` (see :func:`plain_lines`)."""
    odd: list[tuple[int, bytes]] = []
    parts: list[bytes] = []
    index, done = [], 0
    line = 0
    for start, end in spans:
        line += int(np.count_nonzero(data[done:start] == 0x0A))
        parts.append(block[done:start])
        odd.append((first_line + line, block[start : end + 1]))
        index.append(line)
        line += 1
        done = end + 1
    parts.append(block[done:])
    numbers = np.delete(np.arange(first_line, first_line + lines, dtype=np.int64), index)
    return numbers, odd, b"".join(parts), False

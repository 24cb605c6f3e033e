"""Property tests of the reader on arbitrary bytes: nothing lost, nothing escapes (G1 fuzz)."""

from __future__ import annotations

import csv
import io
import re
import tempfile
from pathlib import Path
from typing import Literal
from unittest import mock

from hypothesis import given, settings
from hypothesis import strategies as st

from weightstream.errors import InputError
from weightstream.ingest import MalformedRow, RawRow, csv_reader, open_csv
from weightstream.ingest.csv_reader import split_quoted

HEADER = b"id,user_id,timestamp,effectiveDateTime,source_type,weight,unit"
GOOD = b"r1,u1,2025-02-03 18:50:45,2025-01-22 13:03:37,patient-device,80.5,kg"

# Pieces that make CSV-looking lines with the awkward parts (quotes, commas, bad bytes).
_PIECES = [b"a", b"80.5", b",", b'"', b'""', b" ", b"\t", b"\x00", b"\xff", b"\xc3\xa9", b"\r"]
csvish_lines = st.lists(st.sampled_from(_PIECES), max_size=24).map(b"".join)
any_lines = st.one_of(st.binary(max_size=60), csvish_lines, st.just(GOOD), st.just(b""))
chunk_sizes = st.sampled_from([1, 2, 3, 5, 8, 64, 1 << 20])
terminators = st.sampled_from([b"\n", b"\r\n", b"\r"])


def reference_lines(data: bytes) -> list[bytes]:
    """Physical lines by the ASCII line ends, computed independently of the reader."""
    lines = re.split(rb"\r\n|\r|\n", data)
    if lines and lines[-1] == b"":
        lines.pop()  # the file ended with a terminator
    return lines


def read_all(data: bytes, chunk: int) -> tuple[int, list[RawRow | MalformedRow]]:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "in.csv"
        path.write_bytes(data)
        with mock.patch.object(csv_reader, "_chunk_size", chunk):
            source = open_csv(path)
            return source.header_line, list(source)


@settings(max_examples=200, deadline=None)
@given(st.lists(any_lines, max_size=25), terminators, chunk_sizes)
def test_every_non_blank_line_yields_exactly_one_item(
    lines: list[bytes], terminator: bytes, chunk: int
) -> None:
    """Arbitrary bytes appended as lines: one RawRow or MalformedRow per non-blank line."""
    data = HEADER + b"\n" + GOOD + b"\n" + terminator.join(lines)
    header_line, result = read_all(data, chunk)
    physical = reference_lines(data)
    expected = [
        number
        for number, line in enumerate(physical, start=1)
        if number > header_line and line.strip(b" \t\x0b\x0c")
    ]
    assert header_line == 1
    assert [item.line for item in result] == expected
    assert all(isinstance(item, RawRow | MalformedRow) for item in result)
    assert isinstance(result[0], RawRow)  # the known good line
    for item in result:
        if isinstance(item, RawRow):
            text = physical[item.line - 1]
            assert b"\x00" not in text
            assert text.decode("utf-8")  # only decodable lines become rows


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=300), chunk_sizes)
def test_arbitrary_files_fail_only_with_input_errors(data: bytes, chunk: int) -> None:
    """Any bytes as a whole file: InputError at open, or rows with increasing line numbers."""
    try:
        _, result = read_all(data, chunk)
    except InputError as exc:  # MissingColumnError is a subclass
        assert "\n" not in str(exc)
        return
    numbers = [item.line for item in result]
    assert numbers == sorted(set(numbers))


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200), chunk_sizes)
def test_garbage_after_a_header_never_raises(tail: bytes, chunk: int) -> None:
    """A valid header followed directly by arbitrary bytes never raises while iterating."""
    _, result = read_all(b"user_id,timestamp,weight\n" + tail, chunk)
    numbers = [item.line for item in result]
    assert numbers == sorted(set(numbers)) and all(n >= 2 for n in numbers)


fields = st.text(
    alphabet=st.characters(exclude_categories=["Cs"], exclude_characters="\r\n\x00"),
    max_size=12,
)


@given(
    st.lists(fields, min_size=1, max_size=8),
    st.sampled_from([csv.QUOTE_MINIMAL, csv.QUOTE_ALL]),
)
def test_split_quoted_reads_what_csv_writes(
    values: list[str], quoting: Literal[0, 1, 2, 3]
) -> None:
    """Any line the csv module writes is split back into the same fields."""
    buffer = io.StringIO()
    csv.writer(buffer, quoting=quoting, lineterminator="").writerow(values)
    line = buffer.getvalue()
    if '"' in line:
        assert split_quoted(line) == values
    else:
        assert line.split(",") == values

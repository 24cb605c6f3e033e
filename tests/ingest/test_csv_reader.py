"""The CSV reader: one physical line is one record, bad lines spoil only themselves (G1, G10)."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from weightstream.errors import InputError, MissingColumnError
from weightstream.ingest import CsvInput, MalformedRow, RawRow, csv_reader, file_digest, open_csv
from weightstream.model import Reason

WriteCsv = Callable[[bytes | str], Path]

HEADER = "id,user_id,timestamp,effectiveDateTime,source_type,weight,unit"
GOOD = "r{n},u1,2025-02-03 18:50:45.339,2025-01-22 13:03:37,patient-device,80.{n},kg"


def good(n: int) -> str:
    return GOOD.format(n=n)


def items(source: CsvInput) -> list[RawRow | MalformedRow]:
    return list(source)


def rows_of(path: Path, **kwargs: object) -> list[RawRow | MalformedRow]:
    return items(open_csv(path, **kwargs))  # type: ignore[arg-type]


def test_simple_file_yields_rows_with_physical_line_numbers(write_csv: WriteCsv) -> None:
    """Each data line is one RawRow numbered by its 1-based physical line."""
    path = write_csv("\n".join([HEADER, good(1), good(2)]) + "\n")
    source = open_csv(path)
    result = items(source)
    assert [r.line for r in result] == [2, 3]
    first = result[0]
    assert isinstance(first, RawRow)
    assert first == RawRow(2, "u1", "2025-01-22 13:03:37", "80.1", "kg", "patient-device", "r1")
    assert source.header_line == 1
    assert source.columns == {
        "user_id": "user_id",
        "timestamp": "effectiveDateTime",
        "weight": "weight",
        "unit": "unit",
        "source": "source_type",
        "id": "id",
    }


def test_effective_date_time_preferred_over_timestamp(write_csv: WriteCsv) -> None:
    """When both exist, effectiveDateTime (measured) is used, not timestamp (ingested)."""
    path = write_csv("user_id,timestamp,weight,EFFECTIVEDATETIME\nu1,2025-02-01,80,2025-01-01\n")
    source = open_csv(path)
    assert source.columns["timestamp"] == "EFFECTIVEDATETIME"
    (row,) = items(source)
    assert isinstance(row, RawRow) and row.timestamp == "2025-01-01"


def test_timestamp_used_when_it_is_the_only_time_column(write_csv: WriteCsv) -> None:
    """Without effectiveDateTime, the timestamp column is the time."""
    (row,) = rows_of(write_csv("user_id,timestamp,weight\nu1,2025-02-01,80\n"))
    assert isinstance(row, RawRow) and row.timestamp == "2025-02-01"


def test_aliases_are_case_insensitive_and_trimmed(write_csv: WriteCsv) -> None:
    """Header names match aliases ignoring case and surrounding spaces."""
    path = write_csv(" Patient_ID , Measured_At ,VALUE, Units ,Source,Reading_Id\nu,t,72,lb,s,i\n")
    source = open_csv(path)
    assert set(source.columns) == {"user_id", "timestamp", "weight", "unit", "source", "id"}
    assert items(source) == [RawRow(2, "u", "t", "72", "lb", "s", "i")]


def test_optional_columns_absent_give_none(write_csv: WriteCsv) -> None:
    """Unit, source and id are None when their columns do not exist."""
    assert rows_of(write_csv("userid,date,weight_kg\nu,2025-01-01,80\n")) == [
        RawRow(2, "u", "2025-01-01", "80", None, None, None)
    ]


def test_explicit_column_map_overrides_aliases(write_csv: WriteCsv) -> None:
    """column_map names the columns explicitly, even where an alias would match another."""
    path = write_csv("who,when,kilos,weight,timestamp\nu,2025-01-01,80,999,2024-01-01\n")
    source = open_csv(path, {"user_id": "who", "timestamp": "WHEN", "weight": "kilos"})
    assert source.columns == {"user_id": "who", "timestamp": "when", "weight": "kilos"}
    assert items(source) == [RawRow(2, "u", "2025-01-01", "80", None, None, None)]


def test_column_map_naming_an_absent_column_is_an_error(write_csv: WriteCsv) -> None:
    """A column_map entry for a column not in the header raises MissingColumnError."""
    path = write_csv("user_id,timestamp,weight\nu,t,80\n")
    with pytest.raises(MissingColumnError, match=r"unit \(column_map says lbs_or_kg\)"):
        open_csv(path, {"unit": "lbs_or_kg"})


def test_column_map_with_unknown_field_is_an_error(write_csv: WriteCsv) -> None:
    """A column_map key that is not a canonical field raises InputError."""
    path = write_csv("user_id,timestamp,weight\nu,t,80\n")
    with pytest.raises(InputError, match="unknown field"):
        open_csv(path, {"height": "h"})


def test_missing_required_column_message(write_csv: WriteCsv) -> None:
    """A missing weight column raises one line naming it and the aliases looked for."""
    path = write_csv("user_id,effectiveDateTime,unit\nu,t,kg\n")
    with pytest.raises(MissingColumnError) as caught:
        open_csv(path)
    message = str(caught.value)
    assert "\n" not in message
    assert "weight (looked for weight, value, weight_kg)" in message
    assert "user_id" in message and "'unit'" in message
    assert "timestamp (" not in message


def test_header_without_recognised_column(write_csv: WriteCsv) -> None:
    """A header with no known column says so, and hints at other separators."""
    with pytest.raises(MissingColumnError, match="no recognised column"):
        open_csv(write_csv("a,b,c\n1,2,3\n"))
    with pytest.raises(MissingColumnError, match="semicolon- or tab-separated"):
        open_csv(write_csv("user_id;timestamp;weight\nu;t;80\n"))


def test_duplicate_used_column_is_refused(write_csv: WriteCsv) -> None:
    """A used column that appears twice is an InputError; unused duplicates are fine."""
    with pytest.raises(InputError, match="appears twice"):
        open_csv(write_csv("user_id,timestamp,weight,Weight\nu,t,1,2\n"))
    assert len(rows_of(write_csv("user_id,timestamp,weight,note,note\nu,t,1,a,b\n"))) == 1


def test_empty_file_is_an_input_error(write_csv: WriteCsv) -> None:
    """An empty file (or only blank lines) raises InputError 'empty input'."""
    for content in (b"", b"\n\n  \r\n", b"\xef\xbb\xbf"):
        with pytest.raises(InputError, match="empty input"):
            open_csv(write_csv(content))


def test_header_only_is_a_no_op(write_csv: WriteCsv) -> None:
    """A header without data lines yields no rows and raises nothing."""
    assert rows_of(write_csv(HEADER)) == []
    assert rows_of(write_csv(HEADER + "\r\n\r\n")) == []


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\x00\x00\x00\x00\n\x00\x00", "NUL"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "not UTF-8"),
        ("user_id,weight".encode("utf-16"), "UTF-16"),
        (b'user_id,"timestamp,weight\n', "bad quoting"),
        (b"x" * (2 << 20), "longer than 1 MiB"),
    ],
)
def test_not_csv_input_is_refused_at_open(write_csv: WriteCsv, content: bytes, match: str) -> None:
    """Binary, UTF-16, badly quoted or giant header lines raise InputError with a clear message."""
    with pytest.raises(InputError, match=match) as caught:
        open_csv(write_csv(content))
    assert "\n" not in str(caught.value)


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    """An unreadable path raises InputError, not OSError."""
    with pytest.raises(InputError, match="cannot read"):
        open_csv(tmp_path / "nope.csv")
    with pytest.raises(InputError, match="cannot read"):
        file_digest(tmp_path / "nope.csv")


def test_bom_is_stripped(write_csv: WriteCsv) -> None:
    """A UTF-8 byte-order mark before the header does not become part of the first name."""
    source = open_csv(write_csv(b"\xef\xbb\xbfuser_id,timestamp,weight\nu,t,80\n"))
    assert source.columns["user_id"] == "user_id"
    assert len(items(source)) == 1


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_line_endings(write_csv: WriteCsv, newline: str) -> None:
    """LF, CRLF and bare CR files give the same rows and line numbers."""
    path = write_csv(newline.join([HEADER, good(1), "", good(2)]) + newline)
    source = open_csv(path)
    result = items(source)
    assert [r.line for r in result] == [2, 4]
    assert all(isinstance(r, RawRow) and r.unit == "kg" for r in result)
    assert source.blank_lines == 1


def test_blank_lines_are_skipped_and_counted(write_csv: WriteCsv) -> None:
    """Empty and whitespace-only lines are not rows; they are counted, numbering continues."""
    path = write_csv("\n\n" + HEADER + "\n\n" + good(1) + "\n  \t\n\n" + good(2) + "\n\n")
    source = open_csv(path)
    assert source.header_line == 3
    assert [r.line for r in items(source)] == [5, 8]
    assert source.blank_lines == 2 + 1 + 2 + 1
    assert [r.line for r in items(source)] == [5, 8]  # re-iterable, count not doubled
    assert source.blank_lines == 6


def _malformed(result: list[RawRow | MalformedRow]) -> dict[int, str]:
    return {r.line: r.message for r in result if isinstance(r, MalformedRow)}


def test_wrong_field_count_is_malformed(write_csv: WriteCsv) -> None:
    """Too few or too many fields make a malformed row; neighbours are fine."""
    path = write_csv("\n".join([HEADER, "a,b,c", good(1), good(2) + ",extra", good(3)]))
    result = rows_of(path)
    assert [r.line for r in result] == [2, 3, 4, 5]
    assert _malformed(result) == {
        2: "3 fields where the header has 7",
        4: "8 fields where the header has 7",
    }


def test_unbalanced_quote_does_not_swallow_following_lines(write_csv: WriteCsv) -> None:
    """An unterminated quote spoils only its own line; later lines keep their numbers."""
    lines = [HEADER, good(1), 'r2,"u1,2025-01-01,,patient-device,80,kg', good(3), good(4)]
    result = rows_of(write_csv("\n".join(lines) + "\n"))
    assert [r.line for r in result] == [2, 3, 4, 5]
    assert _malformed(result) == {3: "bad quoting: quoted field not closed on its line"}
    assert [r.id for r in result if isinstance(r, RawRow)] == ["r1", "r3", "r4"]


def test_multi_line_quoted_field_is_two_malformed_rows(write_csv: WriteCsv) -> None:
    """A quoted field spanning two physical lines makes both lines malformed."""
    lines = [HEADER, 'r1,u1,t,"2025-01-01', '",src,80,kg', good(4)]
    result = rows_of(write_csv("\n".join(lines)))
    assert sorted(_malformed(result)) == [2, 3]
    assert isinstance(result[-1], RawRow) and result[-1].line == 4


@pytest.mark.parametrize(
    "line",
    ['r1,u1,t,"2025-01-01"x,s,80,kg', 'r1,u1,t,20"25,s,80,kg', 'r1,u1,t, "2025",s,80,kg'],
)
def test_other_bad_quoting_is_malformed(write_csv: WriteCsv, line: str) -> None:
    """Text after a closing quote, or a quote inside an unquoted field, is malformed."""
    result = rows_of(write_csv("\n".join([HEADER, line, good(3)])))
    assert set(_malformed(result)) == {2}
    assert _malformed(result)[2].startswith("bad quoting")


def test_quoted_fields_with_commas_and_quotes(write_csv: WriteCsv) -> None:
    """Quoted fields may hold commas and doubled quotes, and are unquoted."""
    line = '"r,1","u ""x""",t,"2025-01-22 13:03:37","care, team",80,""'
    (row,) = rows_of(write_csv(HEADER + "\n" + line + "\n"))
    assert row == RawRow(2, 'u "x"', "2025-01-22 13:03:37", "80", "", "care, team", "r,1")


def test_nul_byte_is_malformed(write_csv: WriteCsv) -> None:
    """A line with a NUL byte is malformed; the next line parses."""
    content = (HEADER + "\n").encode() + good(1).encode().replace(b"u1", b"u\x001") + b"\n"
    result = rows_of(write_csv(content + good(2).encode()))
    assert _malformed(result) == {2: "NUL byte in the line"}
    assert isinstance(result[1], RawRow) and result[1].line == 3


def test_non_utf8_bytes_spoil_only_their_line(write_csv: WriteCsv) -> None:
    """Invalid UTF-8 on one line makes that line malformed and no other."""
    bad = good(2).encode().replace(b"patient", b"pati\xe9nt")
    content = b"\n".join([HEADER.encode(), good(1).encode(), bad, good(3).encode()])
    result = rows_of(write_csv(content))
    assert list(_malformed(result)) == [3]
    assert "not UTF-8" in _malformed(result)[3]
    assert [r.line for r in result] == [2, 3, 4]


def test_valid_utf8_text_is_kept(write_csv: WriteCsv) -> None:
    """Non-ASCII UTF-8 in a field is decoded, not refused."""
    (row,) = rows_of(write_csv(HEADER + "\nr,Zoë-中,t,t,src,80,kg\n"))
    assert isinstance(row, RawRow) and row.user_id == "Zoë-中"


def test_huge_field_is_malformed(write_csv: WriteCsv) -> None:
    """A field over 10,000 characters is malformed; exactly 10,000 is allowed."""
    limit = csv_reader.MAX_FIELD_CHARS
    over = HEADER + "\nr," + "u" * (limit + 1) + ",t,t,s,80,kg\n"
    at = "r," + "u" * limit + ",t,t,s,80,kg\n"
    result = rows_of(write_csv(over + at + good(4)))
    assert _malformed(result) == {2: f"a field is longer than {limit} characters"}
    assert isinstance(result[1], RawRow) and len(result[1].user_id) == limit


def test_giant_line_is_skipped_without_buffering(write_csv: WriteCsv) -> None:
    """A data line beyond the line cap is one malformed row and reading continues."""
    giant = "x" * (8 * 1024 * 1024)
    result = rows_of(write_csv("\n".join([HEADER, good(1), giant, good(3)])))
    assert [r.line for r in result] == [2, 3, 4]
    assert "longer than" in _malformed(result)[3]


def test_repeated_header_line_is_malformed(write_csv: WriteCsv) -> None:
    """A copy of the header inside the data (concatenated exports) is malformed."""
    result = rows_of(write_csv("\n".join([HEADER, good(1), HEADER, good(3)])))
    assert _malformed(result) == {3: "repeated header line (concatenated exports?)"}


def test_malformed_row_problem() -> None:
    """A MalformedRow converts to a RowProblem with MALFORMED_ROW on field 'row'."""
    problem = MalformedRow(7, "NUL byte in the line").problem
    assert (problem.reason, problem.field) == (Reason.MALFORMED_ROW, "row")


@pytest.mark.parametrize("chunk", [1, 2, 3, 7, 64])
def test_small_chunks_give_the_same_rows(
    write_csv: WriteCsv, monkeypatch: pytest.MonkeyPatch, chunk: int
) -> None:
    """Chunk boundaries anywhere (including between CR and LF) do not change the result."""
    content = "\r\n".join([HEADER, good(1), "", good(2), 'x,"y']) + "\r" + good(6) + "\r\n"
    path = write_csv(content)
    expected = rows_of(path)
    monkeypatch.setattr(csv_reader, "_chunk_size", chunk)
    assert rows_of(path) == expected
    assert [r.line for r in expected] == [2, 4, 5, 6]


def test_file_digest_is_sha256_of_bytes(write_csv: WriteCsv) -> None:
    """file_digest is the SHA-256 hex of the file's bytes."""
    content = (HEADER + "\n" + good(1)).encode()
    assert file_digest(write_csv(content)) == hashlib.sha256(content).hexdigest()

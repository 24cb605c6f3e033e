"""Reading a weight export CSV robustly: one physical line is one record.

Policy
------
The header
    is the first line that is not blank (a UTF-8 byte-order mark on the first line is dropped).
    Column names are matched trimmed and case-insensitively against the aliases in
    :data:`ALIASES`, in their order of preference: ``effectiveDateTime`` (when the weight was
    measured) wins over ``timestamp`` (in real exports, when the row was ingested). An explicit
    ``column_map`` (canonical name -> header name) overrides the aliases, and a column it names
    must exist. A used column that appears twice is refused (which one is meant is a guess).
Whole-input errors (raised by :func:`open_csv`)
    ``InputError``: unreadable file, empty input (no header line), a header line that is not
    UTF-8 text (binary, UTF-16), has NUL bytes, bad quoting or is longer than 1 MiB.
    ``MissingColumnError``: no user, time or weight column; the one-line message names what is
    missing and which aliases were looked for. A header with only a header line and no data is
    *not* an error: iterating yields nothing.
Data lines
    Each line after the header is one row, numbered by its 1-based physical line in the file.
    ``\\n``, ``\\r\\n`` and ``\\r`` all end a line. Blank lines (empty or ASCII whitespace) are not
    rows; they are counted in :attr:`CsvInput.blank_lines`. Every other line yields exactly one
    :class:`RawRow` or one :class:`MalformedRow` (``Reason.MALFORMED_ROW``), for: a NUL byte;
    bytes that are not UTF-8; bad quoting by RFC 4180 (see :func:`split_quoted`: a quote inside
    an unquoted field, text after a closing quote, or a quoted field still open at the end of
    the line, as a quoted field never continues onto the next line, so a multi-line field is
    two malformed rows rather than a swallowed file); a field count different from the
    header's; a field over :data:`MAX_FIELD_CHARS` characters; a line too long to be anything
    else; or a repeat of the header line (concatenated exports). Each line is decoded on its
    own, so one bad byte spoils only its own line. Lines without a ``"`` are split with
    ``str.split(",")``; only lines with quotes take the slower quoted-field splitter.
Fields
    are passed on as written (not trimmed); :mod:`weightstream.ingest.rows` interprets them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import BinaryIO, Final, NamedTuple

from weightstream.errors import InputError, MissingColumnError
from weightstream.ingest._problem import ASCII_WHITESPACE, RowProblem, quote_short
from weightstream.model import Reason

__all__ = [
    "ALIASES",
    "FIELDS",
    "MAX_FIELD_CHARS",
    "CsvInput",
    "MalformedRow",
    "RawRow",
    "file_digest",
    "open_csv",
]

#: Canonical field names, in the order of :class:`RawRow`'s fields after ``line``.
FIELDS: Final = ("user_id", "timestamp", "weight", "unit", "source", "id")
_REQUIRED: Final = frozenset({"user_id", "timestamp", "weight"})

#: Header names understood for each canonical field, most preferred first.
ALIASES: Final[Mapping[str, tuple[str, ...]]] = {
    "user_id": ("user_id", "patient_id", "userid"),
    "timestamp": ("effectiveDateTime", "timestamp", "date", "datetime", "measured_at"),
    "weight": ("weight", "value", "weight_kg"),
    "unit": ("unit", "units"),
    "source": ("source_type", "source"),
    "id": ("id", "measurement_id", "reading_id"),
}

#: A longer field makes its row malformed.
MAX_FIELD_CHARS: Final = 10_000
_MAX_HEADER_BYTES: Final = 1 << 20
_BOM: Final = b"\xef\xbb\xbf"
_chunk_size = 1 << 20  # bytes per read; tests shrink it to exercise chunk boundaries


class RawRow(NamedTuple):
    """One well-formed data line: its physical line number and its fields as written.

    Optional columns that the file does not have are ``None``.
    """

    line: int
    user_id: str
    timestamp: str
    weight: str
    unit: str | None
    source: str | None
    id: str | None


class MalformedRow(NamedTuple):
    """A data line that is not a CSV record of the header's shape, and why."""

    line: int
    message: str

    @property
    def problem(self) -> RowProblem:
        """This line as a :class:`RowProblem` with ``Reason.MALFORMED_ROW``."""
        return RowProblem(Reason.MALFORMED_ROW, "row", self.message)


class CsvInput:
    """An opened export: its resolved columns, and its rows on iteration.

    Iterating opens the file again and reads from just after the header, so a ``CsvInput`` can
    be iterated more than once and holds no open file between iterations.
    """

    def __init__(
        self,
        path: Path,
        header: tuple[str, ...],
        indices: Mapping[str, int],
        header_line: int,
        data_offset: int,
        blank_lines_before_header: int,
    ) -> None:
        self.path = path
        #: The header's names as written.
        self.header = header
        #: Canonical field name -> header name as written, for the columns in use.
        self.columns: Mapping[str, str] = {name: header[i] for name, i in indices.items()}
        #: 1-based physical line number of the header.
        self.header_line = header_line
        #: Blank lines seen so far (before the header, and in the data read so far).
        self.blank_lines = blank_lines_before_header
        self._indices = dict(indices)
        self._data_offset = data_offset
        self._blank_before = blank_lines_before_header
        # No legitimate line is longer: MAX_FIELD_CHARS of at most 4 UTF-8 bytes, quotes, commas.
        self._line_cap = max(_MAX_HEADER_BYTES, len(header) * (4 * MAX_FIELD_CHARS + 3))

    def __repr__(self) -> str:
        return f"CsvInput({str(self.path)!r}, columns={dict(self.columns)!r})"

    def __iter__(self) -> Iterator[RawRow | MalformedRow]:
        """Every non-blank data line, in file order, as a RawRow or a MalformedRow."""
        self.blank_lines = self._blank_before
        try:
            with self.path.open("rb") as stream:
                stream.seek(self._data_offset)
                yield from self._rows(physical_lines(stream, self._line_cap, _chunk_size))
        except OSError as exc:
            raise InputError(f"cannot read {self.path}: {exc.strerror or exc}") from None

    @property
    def indices(self) -> Mapping[str, int]:
        """Canonical field name -> position in a data line, for the columns in use."""
        return self._indices

    @property
    def data_offset(self) -> int:
        """Byte offset of the first line after the header."""
        return self._data_offset

    @property
    def line_cap(self) -> int:
        """No data line is longer (bytes)."""
        return self._line_cap

    def rows_of(
        self, lines: Iterator[bytes | None], first_line: int
    ) -> Iterator[RawRow | MalformedRow]:
        """The rows of ``lines`` (physical lines, ``first_line`` the number of the first).

        The same reading as iterating the file, for a part of it (the columnar reader hands
        the lines it does not take to this).
        """
        return self._rows(lines, first_line - 1)

    def _rows(
        self, lines: Iterator[bytes | None], number: int | None = None
    ) -> Iterator[RawRow | MalformedRow]:
        count = len(self.header)
        user, time, weight = (self._indices[f] for f in ("user_id", "timestamp", "weight"))
        unit, source, ident = (self._indices.get(f, -1) for f in ("unit", "source", "id"))
        header_user, header_weight = self.header[user], self.header[weight]
        number = self.header_line if number is None else number
        for part in lines:
            number += 1
            if part is None:
                yield MalformedRow(number, f"line longer than {self._line_cap} bytes")
                continue
            raw = part.rstrip(b"\r\n")
            if not raw or raw.isspace():
                self.blank_lines += 1
                continue
            if b"\0" in raw:
                yield MalformedRow(number, "NUL byte in the line")
                continue
            try:
                text = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield MalformedRow(number, f"not UTF-8 text (bad byte at offset {exc.start})")
                continue
            fields = text.split(",") if '"' not in text else split_quoted(text)
            if isinstance(fields, str):
                yield MalformedRow(number, f"bad quoting: {fields}")
                continue
            if len(fields) != count:
                yield MalformedRow(number, f"{len(fields)} fields where the header has {count}")
                continue
            if len(text) > MAX_FIELD_CHARS and max(map(len, fields)) > MAX_FIELD_CHARS:
                yield MalformedRow(number, f"a field is longer than {MAX_FIELD_CHARS} characters")
                continue
            if fields[user] == header_user and fields[weight] == header_weight:
                yield MalformedRow(number, "repeated header line (concatenated exports?)")
                continue
            yield RawRow(
                number,
                fields[user],
                fields[time],
                fields[weight],
                fields[unit] if unit >= 0 else None,
                fields[source] if source >= 0 else None,
                fields[ident] if ident >= 0 else None,
            )


def open_csv(path: Path | str, column_map: Mapping[str, str] | None = None) -> CsvInput:
    """Open the export at ``path``: read and check its header, resolve the columns.

    Raises :class:`InputError` or :class:`MissingColumnError` (policy: module docstring).
    """
    path = Path(path)
    try:
        with path.open("rb") as stream:
            number, blanks, raw, offset = _find_header(stream)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    header = _parse_header(raw, number)
    indices = _resolve(header, number, column_map or {})
    return CsvInput(path, header, indices, number, offset, blanks)


def file_digest(path: Path | str) -> str:
    """SHA-256 of the file's bytes (hex): the input's identity when resuming."""
    digest = hashlib.sha256()
    try:
        with Path(path).open("rb") as stream:
            while chunk := stream.read(1 << 20):
                digest.update(chunk)
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from None
    return digest.hexdigest()


def _find_header(stream: BinaryIO) -> tuple[int, int, bytes, int]:
    """(line number, blank lines before it, header bytes, offset of the next line)."""
    offset = 0
    lines = physical_lines(stream, _MAX_HEADER_BYTES, _chunk_size)
    for number, part in enumerate(lines, start=1):
        if part is None:
            raise InputError(f"line {number} is longer than 1 MiB before any header: not a CSV")
        offset += len(part)
        raw = part.rstrip(b"\r\n")
        if number == 1 and raw.startswith(_BOM):
            raw = raw[len(_BOM) :]
        if raw and not raw.isspace():
            return number, number - 1, raw, offset
    raise InputError("empty input: no header line")


def _parse_header(raw: bytes, number: int) -> tuple[str, ...]:
    """The column names of the header line, or InputError if it is not CSV text."""
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        raise InputError("input is UTF-16 text; re-export it as UTF-8 CSV")
    if b"\0" in raw:
        raise InputError(f"header line {number} has NUL bytes: not a CSV text file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise InputError(f"header line {number} is not UTF-8 text: not a CSV file") from None
    names = text.split(",") if '"' not in text else split_quoted(text)
    if isinstance(names, str):
        raise InputError(f"header line {number} has bad quoting: {names}")
    return tuple(name.strip(ASCII_WHITESPACE) for name in names)


def _resolve(header: tuple[str, ...], number: int, column_map: Mapping[str, str]) -> dict[str, int]:
    """Canonical field -> column index; raise MissingColumnError naming what is missing."""
    unknown = sorted(set(column_map) - set(FIELDS))
    if unknown:
        raise InputError(
            f"column_map has unknown field(s) {', '.join(unknown)}; known: {', '.join(FIELDS)}"
        )
    keys = [name.lower() for name in header]
    indices: dict[str, int] = {}
    missing: list[str] = []
    for field in FIELDS:
        explicit = field in column_map
        wanted = (column_map[field],) if explicit else ALIASES[field]
        found = next((w for w in wanted if w.strip().lower() in keys), None)
        if found is None:
            if explicit or field in _REQUIRED:
                how = "column_map says" if explicit else "looked for"
                missing.append(f"{field} ({how} {', '.join(wanted)})")
            continue
        key = found.strip().lower()
        if keys.count(key) > 1:
            raise InputError(f"header line {number}: column {quote_short(found)} appears twice")
        indices[field] = keys.index(key)
    if missing:
        raise MissingColumnError(_missing_message(header, number, indices, missing))
    return indices


def _missing_message(
    header: tuple[str, ...], number: int, indices: Mapping[str, int], missing: list[str]
) -> str:
    shown = ", ".join(quote_short(name) for name in header[:12])
    more = f" and {len(header) - 12} more" if len(header) > 12 else ""
    hint = ""
    if not indices:
        hint = " no recognised column: not a weight export?"
        if len(header) == 1 and (";" in header[0] or "\t" in header[0]):
            hint += " (the header looks semicolon- or tab-separated; only commas are read)"
    return f"missing column(s): {'; '.join(missing)}.{hint} Header line {number} has: {shown}{more}"


def physical_lines(stream: BinaryIO, cap: int, chunk_size: int = 1 << 20) -> Iterator[bytes | None]:
    """Each physical line of ``stream`` *with* its terminator, or ``None`` for one over ``cap``.

    Lines end at ``\\n``, ``\\r\\n`` or a bare ``\\r`` (the ASCII line ends, not the Unicode ones
    ``str.splitlines`` also uses). A line longer than ``cap`` bytes is not buffered but skipped
    to its end, so memory stays bounded whatever the input.

    >>> import io
    >>> list(physical_lines(io.BytesIO(b"a\\r\\nb\\rc\\n\\nd"), cap=10, chunk_size=2))
    [b'a\\r\\n', b'b\\r', b'c\\n', b'\\n', b'd']
    >>> list(physical_lines(io.BytesIO(b"ok\\n" + b"x" * 50 + b"\\nok"), cap=10, chunk_size=4))
    [b'ok\\n', None, b'ok']
    """
    carry = b""
    skipping = False  # inside a line over ``cap``: discard until its terminator
    read = stream.read
    while chunk := read(chunk_size):
        parts: list[bytes] = (carry + chunk).splitlines(keepends=True)
        # The last part is kept back unless it ends with "\n": it may be incomplete, or a "\r"
        # whose "\n" is in the next chunk.
        carry = b"" if parts[-1].endswith(b"\n") else parts.pop()
        if skipping and parts:
            skipping = False
            del parts[0]
            yield None
        for part in parts:
            yield part if len(part) <= cap else None
        if skipping or len(carry) > cap:
            skipping = True
            carry = b"\r" if carry.endswith(b"\r") else b""
    if skipping:
        yield None
    elif carry:
        yield carry if len(carry) <= cap else None


def split_quoted(line: str) -> list[str] | str:
    """The comma-separated fields of ``line`` (RFC 4180 quoting), or a message if malformed.

    Stricter than the ``csv`` module, which silently accepts a quote inside an unquoted field
    (``a,b"c``) and, outside strict mode, text after a closing quote (``"ab"c``).

    >>> split_quoted('a,"b, c","x""y",')
    ['a', 'b, c', 'x"y', '']
    >>> split_quoted('a,"b')
    'quoted field not closed on its line'
    >>> split_quoted('a,b"c')
    'quote inside an unquoted field'
    """
    fields: list[str] = []
    end = len(line)
    i = 0
    while True:
        if i < end and line[i] == '"':
            pieces: list[str] = []
            i += 1
            while True:
                close = line.find('"', i)
                if close < 0:
                    return "quoted field not closed on its line"
                pieces.append(line[i:close])
                if line.startswith('"', close + 1):  # "" is an escaped quote
                    pieces.append('"')
                    i = close + 2
                    continue
                i = close + 1
                break
            fields.append("".join(pieces))
            if i == end:
                return fields
            if line[i] != ",":
                return "text after a closing quote"
            i += 1
        else:
            comma = line.find(",", i)
            stop = end if comma < 0 else comma
            field = line[i:stop]
            if '"' in field:
                return "quote inside an unquoted field"
            fields.append(field)
            if comma < 0:
                return fields
            i = comma + 1

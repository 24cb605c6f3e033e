"""The columnar reader's shortcuts give every line what the line reader gives it.

Each shortcut skips work only when a cheap look at the block's bytes says the work cannot
change the outcome: fields counted in total (a line with too many fields is refused by
polars, so a total that fits means every line fits), no trimming when no field of the
block begins or ends with white space, null words matched in any case without lower-casing
the column. Each test puts, in a block of its own, the line that the shortcut must not miss,
and compares with the line reader (``tests/ingest/test_columnar.py``'s reference).
"""

from __future__ import annotations

import functools
import itertools
import sys
from datetime import UTC, datetime
from pathlib import Path

import polars as pl
import pytest

from weightstream.config import Config
from weightstream.ingest import open_csv, partitions
from weightstream.ingest._lines import padded
from weightstream.ingest._problem import NULL_TOKENS
from weightstream.ingest.columnar import _NULL_SPELLINGS, read_blocks, read_columns
from weightstream.ingest.partitions import read_order
from weightstream.ingest.rows import parse_row
from weightstream.model import to_micros

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CFG = Config()
HEADER = "id,user_id,effectiveDateTime,source_type,weight,unit"


def _plain(n: int, user: str = "u1") -> list[str]:
    return [
        f"p{n}-{k},{user},2025-01-{1 + k % 28:02d} 08:00:00,patient-device,80.{k % 10},kg"
        for k in range(20)
    ]


def _check(path: Path, block_bytes: int) -> None:
    valid: dict[int, tuple[object, ...]] = {}
    bad: dict[int, object] = {}
    for raw in open_csv(path):
        item = parse_row(raw, config=CFG, now=NOW)
        if isinstance(item, tuple):
            ident, user, when, value, unit, kg, source = item
            valid[raw.line] = (ident, user, to_micros(when), value, unit, kg, source)
        else:
            bad[raw.line] = item
    cols = read_columns(path, CFG, now=NOW, block_bytes=block_bytes)
    assert {row[0]: tuple(row[1:]) for row in cols.valid.iter_rows()} == valid
    assert dict(cols.invalid) == bad
    assert cols.rows == len(valid) + len(bad)


def test_a_short_line_and_a_long_line_in_one_block_are_each_judged(tmp_path: Path) -> None:
    """One line with a field too few and one with a field too many (no quote): the block's
    comma total is right, yet both lines are refused with their field counts, and the
    block's other lines are still read by polars."""
    lines = [HEADER, *_plain(1)]
    lines.insert(5, "s1,u1,2025-02-01 08:00:00,patient-device,80.5")
    lines.insert(12, "s2,u1,2025-02-02 08:00:00,patient-device,80.5,kg,extra")
    path = tmp_path / "ragged.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    _check(path, 1 << 20)
    cols = read_columns(path, CFG, now=NOW)
    assert cols.blocks_by_polars == 1
    assert cols.rows_by_polars == 20
    reasons = {line: p.message for line, p in cols.invalid}
    assert reasons == {6: "5 fields where the header has 6", 13: "7 fields where the header has 6"}


@pytest.mark.parametrize(
    "odd",
    [
        "n1,NuLl,2025-02-01 08:00:00,patient-device,80.5,kg",
        "n2,nA,2025-02-01 08:00:00,patient-device,80.5,kg",
        "n3,u1\t,2025-02-01 08:00:00,patient-device,80.5,kg",
        "n4,\x0bu1,2025-02-01 08:00:00,patient-device,80.5,kg",
        " n5,u1,2025-02-01 08:00:00,patient-device,80.5,kg",
        "n6 ,u1,2025-02-01 08:00:00,patient-device,80.5,kg",
        "NoNe,u1,2025-02-01 08:00:00,patient-device,80.5,kg",
        " N/a ,u1,2025-02-01 08:00:00,patient-device,80.5,kg",
        "n7,u1,2025-02-01 08:00:00,patient-device ,80.5,\fkg",
        "n8,u 1,2025-02-01 08:00:00,Patient Device,80.5,kg",
        "n9,\u212a,2025-02-01 08:00:00,patient-device,80.5,kg",
    ],
)
def test_null_words_and_padding_alone_in_a_block(tmp_path: Path, odd: str) -> None:
    """A null word in any case, or white space at either end of one field, in a block
    whose other lines are plain: read as the line reader reads it."""
    lines = [HEADER, *_plain(1), odd, *_plain(2, "u2")]
    path = tmp_path / "odd.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    for size in (1 << 20, 300):
        _check(path, size)


def test_null_spellings_are_the_null_words_in_any_case() -> None:
    """``text in _NULL_SPELLINGS`` is ``len(text) <= 4 and text.lower() in NULL_TOKENS`` for
    every text over the null words' letters in both cases, and no character other than
    ASCII lower-cases to one of those letters (so no other text can be a null word)."""
    letters = sorted({c for token in NULL_TOKENS for c in token + token.upper()} | {"k", "x"})
    spellings = set(_NULL_SPELLINGS)
    for size in range(6):
        for chars in itertools.product(letters, repeat=size):
            text = "".join(chars)
            assert (text in spellings) == (len(text) <= 4 and text.lower() in NULL_TOKENS)
    token_letters = {c for token in NULL_TOKENS for c in token}
    for point in range(0x80, sys.maxunicode + 1):
        lowered = chr(point).lower()
        assert not (lowered and set(lowered) <= token_letters), hex(point)


@pytest.mark.parametrize(
    ("block", "expected"),
    [
        (b"a,2025-01-01 08:00:00,b\n", False),
        (b"a,b\nc,d\n", False),
        (b" a,b\n", True),
        (b"a,b \n", True),
        (b"a, b\n", True),
        (b"a ,b\n", True),
        (b"a,b\n c,d\n", True),
        (b"a,b\nc,d \n", True),
        (b"a\t,b\n", True),
        (b"a,b\x0c\n", True),
        (b"a,\x0bb\n", True),
    ],
)
def test_padding_is_seen_at_every_field_end(block: bytes, expected: bool) -> None:
    """White space at the start or end of any field of any line marks the block padded."""
    assert padded(block) is expected


def test_the_order_does_not_depend_on_how_many_readings_are_split_at_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Readings split into partitions block by block or many blocks at a time: the same
    processing order (the split only decides how many frames the spill writes)."""
    lines = [HEADER]
    for user in range(40):
        lines += _plain(user, f"user-{(user * 7919) % 40:03d}")
    path = tmp_path / "many.csv"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    monkeypatch.setattr(partitions, "PARTITION_BYTES", 4096)

    def order(split_rows: int) -> list[pl.DataFrame]:
        monkeypatch.setattr(partitions, "_SPLIT_ROWS", split_rows)
        small_blocks = functools.partial(read_blocks, block_bytes=2048)
        monkeypatch.setattr(partitions, "read_blocks", small_blocks)
        got = read_order(path, CFG, now=NOW, memory_rows=0, directory=tmp_path)
        try:
            assert got.partitions > 1 and got.on_disk
            return [g.valid for g in got.groups(0, 50)]
        finally:
            got.close()

    one, many = order(1), order(1 << 16)
    assert one[0].height == 50
    assert len(one) == len(many) == 16
    for a, b in zip(one, many, strict=True):
        assert a.equals(b)


@pytest.mark.parametrize("few", [0, 2, 4096])
def test_lines_with_quotes_or_nuls_anywhere_in_a_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, few: int
) -> None:
    """Quoted and NUL lines first, last, side by side and with both bytes, found one by one
    or (past ``_FEW_STRANGE`` of them) all at once: each is judged by the line reader, the
    others are read by polars."""
    monkeypatch.setattr("weightstream.ingest._lines._FEW_STRANGE", few)
    quoted = 'q{},u1,2025-02-01 08:00:00,"patient, device",80.5,kg'
    nul = "z{},u1,2025-02-01 08:00:00,patient-device,8\x000.5,kg"
    both = 'b{},"u1",2025-02-01 08:00:00,patient-device,8\x000.5,kg'
    body = [
        quoted.format(1),
        *_plain(1),
        nul.format(2),
        quoted.format(3),
        both.format(4),
        *_plain(2),
        quoted.format(5),
    ]
    path = tmp_path / "quoted.csv"
    path.write_text("\n".join([HEADER, *body]) + "\n", encoding="utf-8")
    _check(path, 1 << 20)
    cols = read_columns(path, CFG, now=NOW)
    assert cols.rows_by_polars == 40
    assert sorted(line for line, _ in cols.invalid) == [23, 25]  # the NUL lines

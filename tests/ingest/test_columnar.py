"""The columnar reader gives every line exactly what the line reader gives it.

The reference is the line reader (``open_csv`` + ``parse_row``). Each export is read both
ways and compared line by line: the same valid fields (time in microseconds), or the same
problem (reason, field, message). Blocks are made small so that block boundaries fall
everywhere, including between a CR and its LF.
"""

from __future__ import annotations

import random
from datetime import UTC, datetime
from pathlib import Path

import pytest
from typer.testing import CliRunner

from weightstream.cli import app
from weightstream.config import Config
from weightstream.ingest import open_csv
from weightstream.ingest.columnar import read_columns
from weightstream.ingest.rows import parse_row
from weightstream.model import to_micros

NOW = datetime(2026, 6, 1, tzinfo=UTC)
CFG = Config()

# Lines the fast path must hand to the line reader (and that the line reader judges).
ODD_LINES = [
    'q1,u-odd,2025-01-01 08:00:00,patient-device,"80.5",kg',
    "q2,u-odd,2025-01-01 08:00:00,patient-device,80.5",  # too few fields
    "q3,u-odd,2025-01-01 08:00:00,patient-device,80.5,kg,extra",  # too many
    "   ",
    "q4,u-odd,2025-01-01 08:00:00,patient-device,8\x005,kg",
    "id,user_id,effectiveDateTime,source_type,weight,unit",  # a repeated header
    "q5, u-odd ,2025-01-01 08:00:00,patient-device,80.5,kg",  # user with spaces
    "q6,NULL,2025-01-01 08:00:00,patient-device,80.5,kg",
    "q7,u-odd,2025-01-01T08:00:00Z,patient-device,80.5,kg",  # zone: not plain
    "q8,u-odd,2025-01-01 08:00:00.5,patient-device,80.5,kg",  # one fraction digit
    "q9,u-odd,2025-02-30 08:00:00,patient-device,80.5,kg",  # no such day
    "q10,u-odd,1737550000,patient-device,80.5,kg",  # epoch seconds
    "q11,u-odd,1989-12-31 23:59:59,patient-device,80.5,kg",  # before the floor
    "q12,u-odd,2030-01-01 00:00:00,patient-device,80.5,kg",  # in the future
    "q13,u-odd,2025-01-01 08:00:00,patient-device,80.5,kg/m2",
    "q14,u-odd,2025-01-01 08:00:00,patient-device,72\uff15,kg",  # a full-width digit
    "q15,u-odd,2025-01-01 08:00:00,patient-device,1e2,kg",
    "q16,u-odd,2025-01-01 08:00:00,patient-device,0,kg",
    "q17,u-odd,2025-01-01 08:00:00,patient-device,9999,kg",
    "q18,u-odd,2025-01-01 08:00:00, ,80.5, LB ",
    "NA,u-odd,2025-01-01 08:00:00,NULL,176.4,[lb_ap]",
    "q19,u-odd,2025-01-01 08:00:00.250000,patient-device,2500,g",
    "q20,u-odd,2025-01-01T08:00:00.123,care-team-upload,080.50,",
    "",
]


def _reference(path: Path) -> tuple[dict[int, tuple[object, ...]], dict[int, object]]:
    valid: dict[int, tuple[object, ...]] = {}
    bad: dict[int, object] = {}
    for raw in open_csv(path):
        item = parse_row(raw, config=CFG, now=NOW)
        if isinstance(item, tuple):
            ident, user, when, value, unit, kg, source = item
            valid[raw.line] = (ident, user, to_micros(when), value, unit, kg, source)
        else:
            bad[raw.line] = item
    return valid, bad


def _check(path: Path, block_bytes: int) -> None:
    valid, bad = _reference(path)
    cols = read_columns(path, CFG, now=NOW, block_bytes=block_bytes)
    got = {row[0]: tuple(row[1:]) for row in cols.valid.iter_rows()}
    assert got == valid
    assert dict(cols.invalid) == bad
    assert [line for line, _ in cols.invalid] == sorted(bad)
    assert cols.rows == len(valid) + len(bad)


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("columnar") / "export.csv"
    args = ["synth", "--users", "60", "--per-user", "40", "--seed", "11", "--out", str(path)]
    assert CliRunner().invoke(app, args).exit_code == 0
    text = path.read_text(encoding="utf-8").splitlines()
    rng = random.Random(5)
    for line in ODD_LINES:
        text.insert(rng.randrange(1, len(text)), line)
    path.write_text("\n".join(text) + "\n", encoding="utf-8")
    return path


@pytest.mark.parametrize("block_bytes", [64, 1000, 1 << 20])
def test_columns_equal_lines_on_a_synthetic_export_with_odd_lines(export: Path, block_bytes: int) -> None:
    """Synthetic trouble plus hand-made odd lines: every line judged alike, at any block size."""
    _check(export, block_bytes)


def test_crlf_bom_bad_bytes_and_no_final_newline(tmp_path: Path) -> None:
    """CRLF line ends, a BOM, a lone CR, a non-UTF-8 line and no final newline."""
    lines = [
        "id,user_id,effectiveDateTime,source_type,weight,unit",
        "a1,u1,2025-01-01 08:00:00,patient-device,80.5,kg",
        "a2,u1,2025-01-02 08:00:00,patient-device,80.4,kg",
    ]
    path = tmp_path / "crlf.csv"
    path.write_bytes(b"\xef\xbb\xbf" + "\r\n".join(lines).encode() + b"\r\na3,u1,2025-01-03 08:00:00,x,80.3,kg")
    _check(path, 16)
    path.write_bytes("\n".join(lines).encode() + b"\na4,u\xff1,2025-01-03 08:00:00,x,80.3,kg\rb,u2,2025-01-01 08:00:00,x,70,kg\n")
    for size in (8, 40, 1 << 20):
        _check(path, size)


def test_most_rows_of_a_plain_export_are_read_by_polars(export: Path) -> None:
    """The fast path is really taken (or the comparisons above would prove little)."""
    cols = read_columns(export, CFG, now=NOW)
    assert cols.blocks_by_polars >= 1
    assert cols.rows_by_polars >= 0.95 * cols.rows

"""The results file written column-wise is the file ``csv.writer`` writes from the store.

A run writes its results file from the in-memory results table (polars formats the cells);
a resumed run and ``write_results`` read the store and write with ``csv.writer``. Both must
give the same bytes, for every kind of cell: text a spreadsheet would run as a formula,
commas, quotes, non-ASCII text, floats whose ``repr`` is in exponent form, times with and
without microseconds, and empty cells.
"""

from __future__ import annotations

import csv
import math
from pathlib import Path
from typing import Any

import polars as pl
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from weightstream.cli import app
from weightstream.config import Config
from weightstream.engine.content_keys import frame_content_keys
from weightstream.engine.results import float_text, float_texts
from weightstream.model import content_keys
from weightstream.pipeline import process_file, write_results
from weightstream.store.sqlite import SQLiteStore

HOSTILE = [
    ["id", "user_id", "effectiveDateTime", "source_type", "weight", "unit"],
    ["=HYPERLINK(1)", "u,1", "2025-01-01 08:00:00", "+source", "80.0", "kg"],
    ["-2", "u,1", "2025-01-02 08:00:00.250000", "@home", "80.4", "kg"],
    ['say "hi"', "u,1", "2025-01-03 08:00:00", "patient-device", "81.0", "kg"],
    ["\u00e9t\u00e9", "u\u00e91", "2025-01-01 08:00:00.123", "patient-device", "70.0", "kg"],
    ["x", "u\u00e91", "2025-01-02 08:00:00", "patient-device", "70.0001", "kg"],
    ["y", "u2", "not a time", "patient-device", "70.0", "kg"],
    ["z", "", "2025-01-02 08:00:00", "patient-device", "70.0", "kg"],
    ["w", "u3", "2025-01-02 08:00:00", "patient-device", "70.0", "kg/m2"],
    ["v", "u4", "2025-01-02 08:00:00", 'clinic, "front" desk', "70.0", "kg"],
]


def _both(tmp: Path, src: Path, raw: bool, group: int = 2000) -> tuple[bytes, bytes]:
    config = Config.model_validate({"processing": {"commit_group_size": group}})
    with SQLiteStore(tmp / f"w{group}.db") as store:
        process_file(src, store, config, out=tmp / "table.csv", raw=raw)
        write_results(store, _digest(src), tmp / "store.csv", raw=raw)
    return (tmp / "table.csv").read_bytes(), (tmp / "store.csv").read_bytes()


def _digest(src: Path) -> str:
    from weightstream.ingest import file_digest

    return file_digest(src)


@pytest.mark.parametrize("raw", [False, True])
def test_hostile_cells_are_written_alike(tmp_path: Path, raw: bool) -> None:
    """Formula prefixes, commas, quotes, accents, invalid rows: the same bytes both ways."""
    src = tmp_path / "hostile.csv"
    with src.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(HOSTILE)
    table, store = _both(tmp_path, src, raw)
    assert table == store
    assert table.count(b"\r\n") == len(HOSTILE)
    if not raw:
        assert b"'=HYPERLINK(1)" in table and b"'+source" in table
    assert b'"clinic, ""front"" desk"' in table


@pytest.mark.parametrize("scenario", ["mixed", "sparse_clinical"])
def test_synthetic_exports_are_written_alike(tmp_path: Path, scenario: str) -> None:
    """Synthetic exports with every kind of trouble: the same bytes both ways."""
    src = tmp_path / "export.csv"
    args = [
        "synth",
        "--users",
        "30",
        "--per-user",
        "30",
        "--seed",
        "9",
        "--scenario",
        scenario,
        "--out",
        str(src),
    ]
    assert CliRunner().invoke(app, args).exit_code == 0
    table, store = _both(tmp_path, src, raw=False)
    assert table == store


def test_many_groups_tables_make_one_file(tmp_path: Path) -> None:
    """Groups of 13 rows (invalid rows and readings without an id in many of them): their
    tables, gathered into frames of many groups, give the file the store gives, and the
    file of one group."""
    src = tmp_path / "export.csv"
    args = ["synth", "--users", "25", "--per-user", "20", "--seed", "4", "--out", str(src)]
    assert CliRunner().invoke(app, args).exit_code == 0
    with src.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    at = rows[0].index("id")
    for k, row in enumerate(rows[1:]):
        if k % 7 == 3:
            row[at] = ""  # its id is then its content key
    with src.open("w", newline="", encoding="utf-8") as fh:
        csv.writer(fh).writerows(rows)
    table, store = _both(tmp_path, src, raw=False, group=13)
    assert table == store
    assert b"h:" in table and b",invalid," in table
    whole, _ = _both(tmp_path, src, raw=False, group=10_000)
    assert table == whole


def test_floats_are_written_as_repr_writes_them() -> None:
    """Every magnitude, and the exponent forms repr uses, come out as repr writes them."""
    values = [
        80.0,
        0.1,
        1e-4,
        9.99e-5,
        1.5e-7,
        -2.5e-9,
        123456789.0,
        1e15,
        1e16,
        1.7e300,
        -0.0,
        0.0,
        5e-324,
        2.2250738585072014e-308,
        0.30000000000000004,
    ]
    values += [math.ldexp(1.0, e) * 1.37 for e in range(-60, 60)]
    series = pl.Series(values, dtype=pl.Float64)
    text = pl.select(float_text(series)).to_series().to_list()
    assert text == [repr(v) for v in values]


@settings(max_examples=200, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.one_of(st.none(), st.floats(min_value=20.0, max_value=400.0)),
            st.one_of(st.none(), st.floats(allow_nan=False)),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_columns_are_written_as_repr_writes_them_whether_or_not_one_needs_python(
    rows: list[tuple[float | None, float | None]],
) -> None:
    """float_texts: a column of plain weights (cast by polars) and one of any floats (an
    exponent or an infinity sends it to Python's repr) beside it, each cell as repr writes
    it ('' for none)."""
    f = pl.DataFrame(rows, schema={"plain": pl.Float64, "any": pl.Float64}, orient="row")
    texts = float_texts(f, ("plain", "any"))
    got = f.select(**texts).rows()
    assert got == [tuple("" if v is None else repr(v) for v in row) for row in rows]


#: The columns content keys are made of, as the sorted readings type them.
_KEY_SCHEMA = {
    "user": pl.String,
    "ts": pl.Int64,
    "value": pl.Float64,
    "unit": pl.String,
    "source": pl.String,
}


@settings(max_examples=200, deadline=None, derandomize=True)
@given(
    st.lists(
        st.tuples(
            st.text(min_size=1, max_size=12),
            st.integers(min_value=-(2**62), max_value=2**62),
            st.floats(allow_nan=False, allow_infinity=False),
            st.sampled_from(["kg", " KG", "[lb_ap]", "[LB_AV]\t", "g", "Kg "]),
            st.text(max_size=12),
        ),
        min_size=1,
        max_size=30,
    )
)
def test_content_keys_made_by_polars_are_the_model_s(rows: list[tuple[Any, ...]]) -> None:
    """The file engine's content keys (text joined by polars) are ``content_keys``' keys."""
    users, ts, values, units, sources = (list(c) for c in zip(*rows, strict=True))
    frame = pl.DataFrame(
        {"user": users, "ts": ts, "value": values, "unit": units, "source": sources},
        schema=_KEY_SCHEMA,
    )
    assert frame_content_keys(frame) == content_keys(users, ts, values, units, sources)


def test_content_keys_with_a_missing_field_are_python_s() -> None:
    """A row with a field missing (which no valid reading has) still gets the model's key."""
    frame = pl.DataFrame(
        {
            "user": ["u1", "u2"],
            "ts": [0, 5],
            "value": [80.0, 81.5],
            "unit": ["kg", "kg"],
            "source": ["patient-device", None],
        },
        schema=_KEY_SCHEMA,
    )
    expected = content_keys(
        ["u1", "u2"], [0, 5], [80.0, 81.5], ["kg", "kg"], ["patient-device", None]
    )  # type: ignore[list-item]
    assert frame_content_keys(frame) == expected

"""Content keys of a group's readings, made column-wise.

A reading's content key (:func:`weightstream.model.content_keys`: the hash of its user, time,
value, unit and source) identifies it when it has no id of its own, and finds the same
reading sent twice. A file run needs one for every reading of every group: here polars joins
each key's text for the whole group, and Python only hashes it. The model keeps the one
definition of the text and the hash; ``tests/engine/test_results_table.py`` holds the two
ways of making a key together.
"""

from __future__ import annotations

import polars as pl

from weightstream.engine.results import float_text
from weightstream.model import KEY_SEPARATOR, content_keys, key_digest, normal_unit

__all__ = ["CONTENT", "frame_content_keys", "with_content_keys"]

#: The column :func:`with_content_keys` adds: each reading's content key.
CONTENT = "content"
#: Keys hashed at a time by :func:`with_content_keys`.
_HASHED = 4_096


def frame_content_keys(f: pl.DataFrame) -> list[str]:
    """:func:`weightstream.model.content_keys` of rows with columns ``user``, ``ts``,
    ``value``, ``unit`` and ``source``: the same keys, their text joined by polars.

    Floats are written as ``repr`` writes them and units normalised by
    :func:`~weightstream.model.normal_unit`, once per unit; only the hash is left to Python:
    40% less time than the keys made in Python (``tests/engine/test_results_table.py``
    holds the two together).
    """
    text = _key_texts(f)
    if text is None:  # a missing field (no valid reading has one): Python's text of it
        columns = (f.get_column(c).to_list() for c in ("user", "ts", "value", "unit", "source"))
        return content_keys(*columns)
    return _digests(text)


def _key_texts(f: pl.DataFrame) -> pl.Series | None:
    """Each row's key text (UTF-8), joined by polars; None if a field is missing."""
    units = f.get_column("unit")
    norm = {u: normal_unit(u) for u in units.unique().to_list()}
    parts = [
        pl.col("user"),
        pl.col("ts").cast(pl.String),
        float_text(f.get_column("value")),
        pl.col("unit").replace_strict(norm, return_dtype=pl.String),
        pl.col("source"),
    ]
    text = f.select(pl.concat_str(parts, separator=KEY_SEPARATOR).cast(pl.Binary)).to_series()
    return None if text.null_count() else text


def _digests(text: pl.Series) -> list[str]:
    digest = key_digest
    return ["h:" + digest(raw).hexdigest() for raw in text.to_list()]


def with_content_keys(f: pl.DataFrame) -> pl.DataFrame:
    """``f`` with column :data:`CONTENT`: :func:`frame_content_keys` of its rows.

    Made once for a sorted partition (~28,000 readings), then sliced into commit groups with
    the rest: polars' calls cost per call, and made a group (2,000 readings) at a time they
    took 1.74 us a reading against 1.05 for a partition (263,249 readings of synth's 1M-row
    export, a throwaway script, 4 Dec).
    """
    text = _key_texts(f)
    if text is None:
        return f.with_columns(pl.Series(CONTENT, frame_content_keys(f), dtype=pl.String))
    # Hashed a slice at a time: a partition's keys are never all Python strings at once.
    pieces = [
        pl.Series(CONTENT, _digests(text.slice(at, _HASHED)), dtype=pl.String)
        for at in range(0, len(text), _HASHED)
    ]
    keys = pl.concat(pieces) if pieces else pl.Series(CONTENT, [], dtype=pl.String)
    return f.with_columns(keys)

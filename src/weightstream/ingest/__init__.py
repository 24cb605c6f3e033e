"""Ingest: body-weight exports in, validated :class:`~weightstream.model.Measurement` out.

::

    source = open_csv(path)                 # raises InputError / MissingColumnError
    for raw in source:                      # RawRow | MalformedRow, one per non-blank line
        item = to_measurement(raw, config=config, now=clock.now())
        # item is a Measurement, or a RowProblem(reason, field, message)

    item = validate_reading(m, config=config, now=clock.now())   # a Measurement built in code

Every module states its policy in its docstring: :mod:`.csv_reader` (lines, quoting, columns),
:mod:`.numbers` (which texts are numbers), :mod:`.units` (factors, refused units),
:mod:`.timestamps` (forms, zones, epoch seconds vs milliseconds), :mod:`.rows` (the order
of checks and the reading id).
"""

from weightstream.ingest._problem import RowProblem
from weightstream.ingest.csv_reader import CsvInput, MalformedRow, RawRow, file_digest, open_csv
from weightstream.ingest.numbers import parse_number
from weightstream.ingest.rows import to_measurement, validate_reading
from weightstream.ingest.timestamps import parse_timestamp
from weightstream.ingest.units import to_kg

__all__ = [
    "CsvInput",
    "MalformedRow",
    "RawRow",
    "RowProblem",
    "file_digest",
    "open_csv",
    "parse_number",
    "parse_timestamp",
    "to_kg",
    "to_measurement",
    "validate_reading",
]

"""Commands that process no file start without the file pipeline's heavy libraries (issue 11).

polars and numba (with llvmlite) are ~90 MB of a process's memory and most of its start-up;
only ``process`` (and what it calls) needs them. Each case runs in a fresh interpreter, since
this test process has imported everything already.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

HEAVY = ("polars", "numba", "llvmlite")

_PROBE = """
import atexit, sys
atexit.register(lambda: print("LOADED", *sorted(m for m in {heavy!r} if m in sys.modules),
                              file=sys.stderr))
{body}
"""


def _loaded(body: str) -> list[str]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE.format(heavy=HEAVY, body=body)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    lines = [x for x in done.stderr.splitlines() if x.startswith("LOADED")]
    assert lines, done.stderr
    return lines[-1].split()[1:]


@pytest.mark.parametrize(
    "body",
    [
        "import weightstream",
        "from weightstream import Processor, MemoryStore, SQLiteStore, load_config",
        "import sys; sys.argv = ['weightstream', '--help']\n"
        "from weightstream.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass",
        "import sys; sys.argv = ['weightstream', 'config']\n"
        "from weightstream.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass",
    ],
    ids=["package", "library", "cli-help", "cli-config"],
)
def test_no_heavy_library_without_a_file_to_process(body: str) -> None:
    """The package, its library names and the CLI's help and config load neither polars
    nor numba."""
    assert _loaded(body) == []


def test_process_file_is_still_there_on_first_use() -> None:
    """``weightstream.process_file`` and ``RunSummary`` load the pipeline when first asked."""
    assert _loaded("import weightstream\nweightstream.process_file") == sorted(HEAVY)
    assert _loaded("from weightstream import RunSummary") == sorted(HEAVY)


def test_a_file_run_on_sqlite_loads_no_postgresql_driver(tmp_path) -> None:
    """``process`` into a SQLite file never imports psycopg (10 MB of the run's memory): the
    PostgreSQL store is loaded only for a ``--db`` that is a URL."""
    export = tmp_path / "export.csv"
    export.write_text(
        "id,user_id,timestamp,source_type,weight,unit\n"
        "a1,u1,2024-01-01 08:00:00,patient-device,80.0,kg\n"
        "a2,u1,2024-01-02 08:00:00,patient-device,80.2,kg\n",
        encoding="utf-8",
    )
    out = tmp_path / "results.csv"
    argv = ["weightstream", "process", str(export), "--db", str(tmp_path / "x.db"),
            "--out", str(out)]  # fmt: skip
    probe = (
        f"import sys; sys.argv = {argv!r}\n"
        "from weightstream.cli import main\ntry:\n    main()\nexcept SystemExit:\n    pass\n"
        "print('LOADED', *sorted(m for m in ('psycopg', 'weightstream.store.postgres') "
        "if m in sys.modules), file=sys.stderr)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, check=False
    )
    lines = [x for x in done.stderr.splitlines() if x.startswith("LOADED")]
    assert lines == ["LOADED"], done.stderr
    assert out.read_text(encoding="utf-8").count("\n") == 3  # the run did happen

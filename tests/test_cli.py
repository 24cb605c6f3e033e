"""End to end through the real CLI: synth -> process -> results, errors, reruns, other commands.

Every subprocess is expensive, so runs are shared through module-scoped fixtures.
"""

from __future__ import annotations

import csv
import json
import random
import shutil
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

LB_KG = 0.45359237
HEADER = "id,user_id,timestamp,effectiveDateTime,source_type,weight,unit"

#: Synthetic kinds whose verdict is deterministic, and the reason codes that are right for them.
INVALID_REASONS: dict[str, set[str]] = {
    "null": {"missing_value"},
    "bmi_unit": {"unit_is_bmi"},
    "bsa_unit": {"unit_is_bsa"},
    # an empty effectiveDateTime (and "N/A") is a missing timestamp; the rest are unparseable
    "bad_timestamp": {"bad_timestamp", "missing_timestamp"},
    "future": {"timestamp_in_future"},
    "ancient": {"timestamp_too_old"},
    # "n/a" is one of the documented null words, so it is a missing value
    "bad_number": {"not_a_number", "missing_value"},
}
DUPLICATE_REASONS = {"duplicate_id": "duplicate_key", "duplicate_content": "duplicate_content"}
OUTLIER_REASONS = {"unit_error": "probable_unit_error", "bmi_as_kg": "probable_bmi"}


def _json(stdout: str) -> dict[str, Any]:
    return json.loads(stdout)


def _data_lines(path: Path) -> int:
    return sum(1 for line in path.read_bytes().splitlines()[1:] if line.strip())


# ---------------------------------------------------------------------------------------------
# One shared processing of the synthetic export


@pytest.fixture(scope="module")
def first_run(tmp_path_factory, synth_export, cli, db_iterdump) -> dict[str, Any]:
    """``process`` on a copy of the shared export, with results, metrics and a JSON summary."""
    work = tmp_path_factory.mktemp("cli-run")
    export = work / "export.csv"
    shutil.copyfile(synth_export.path, export)
    db, out, prom = work / "ws.db", work / "results.csv", work / "metrics.prom"
    res = cli("process", export, "--db", db, "--out", out, "--metrics-file", prom, "--json")
    assert res.returncode == 0, res.stderr
    return {
        "export": export, "db": db, "out": out, "prom": prom, "summary": _json(res.stdout),
        "results_bytes": out.read_bytes(), "dump": db_iterdump(db),
    }


@pytest.fixture(scope="module")
def first_results(first_run, results_of) -> list[dict[str, str]]:
    return results_of(first_run["out"])


def test_one_result_per_input_row_in_input_order(first_run, first_results, synth_export):
    """The results file has exactly one row per data line, numbered by line, in input order."""
    assert len(first_results) == synth_export.rows == _data_lines(first_run["export"])
    assert [int(r["row"]) for r in first_results] == list(range(2, synth_export.rows + 2))
    with first_run["export"].open(newline="", encoding="utf-8") as handle:
        export_rows = list(csv.DictReader(handle))
    for res, src in zip(first_results, export_rows, strict=True):
        if res["verdict"] != "invalid":
            assert (res["reading_id"], res["user_id"]) == (src["id"], src["user_id"]), res["row"]
    s = first_run["summary"]
    assert s["rows"] == s["processed_now"] == synth_export.rows
    assert sum(s[v] for v in ("accepted", "rejected", "invalid", "duplicate", "late")) == s["rows"]


def test_deterministic_kinds_get_their_verdict_and_reason(first_results, synth_export):
    """Invalid kinds are `invalid` and duplicate kinds `duplicate`, each with the right reason."""
    truth = synth_export.truth_rows()
    seen: Counter[str] = Counter()
    previous: dict[str, str] = {}
    for res, t in zip(first_results, truth, strict=True):
        kind = t["kind"]
        if kind == "duplicate_content":
            # The same reading under two ids, right after each other in the file. Which of
            # the two is the duplicate is decided by content order (the smaller id first),
            # never by position in the file (I14): exactly one of them is.
            seen[kind] += 1
            pair = {(res["verdict"], res["reason"]), (previous["verdict"], previous["reason"])}
            assert ("duplicate", "duplicate_content") in pair, (res["row"], kind, res, previous)
            assert len(pair) == 2, (res["row"], pair)
        elif kind in INVALID_REASONS:
            seen[kind] += 1
            assert res["verdict"] == "invalid", (res["row"], kind, res)
            assert res["reason"] in INVALID_REASONS[kind], (res["row"], kind, res["reason"])
            assert res["message"].startswith(f"line {res['row']}:"), res
        elif kind in DUPLICATE_REASONS:
            seen[kind] += 1
            assert (res["verdict"], res["reason"]) == ("duplicate", DUPLICATE_REASONS[kind]), (
                res["row"], kind, res)
        previous = res
    # the fixture must really contain every kind, or this test proves nothing
    assert set(seen) == set(INVALID_REASONS) | set(DUPLICATE_REASONS), seen


def test_outlier_kinds_are_rejected_with_a_specific_reason(first_results, synth_export):
    """Pounds-as-kg and BMI-as-kg rows are rejected as probable unit error / probable BMI."""
    truth = synth_export.truth_rows()
    judged, hits, misses = Counter(), Counter(), []
    for res, t in zip(first_results, truth, strict=True):
        kind = t["kind"]
        if kind not in OUTLIER_REASONS:
            continue
        if res["reset_type"] == "initial":
            continue  # a user's very first reading has nothing to be compared with
        judged[kind] += 1
        if (res["verdict"], res["reason"]) == ("rejected", OUTLIER_REASONS[kind]):
            hits[kind] += 1
        else:
            misses.append((res["row"], kind, res["verdict"], res["reason"]))
    print("outlier-kind misses:", misses)
    assert all(judged[k] >= 3 for k in OUTLIER_REASONS), judged
    assert sum(hits.values()) >= 0.9 * sum(judged.values()), misses


def test_clean_rows_are_accepted_and_pounds_converted_exactly(first_results, synth_export):
    """Clean rows are almost all accepted; labelled pounds are accepted at x 0.45359237."""
    truth = synth_export.truth_rows()
    with synth_export.path.open(newline="", encoding="utf-8") as handle:
        export_rows = list(csv.DictReader(handle))
    clean = [r for r, t in zip(first_results, truth, strict=True) if t["kind"] == "clean"]
    accepted = sum(r["verdict"] == "accepted" for r in clean)
    misses = Counter((r["verdict"], r["reason"]) for r in clean if r["verdict"] != "accepted")
    print(f"clean accepted {accepted}/{len(clean)}; others: {dict(misses)}")
    assert accepted >= 0.97 * len(clean)
    lb = [(r, e) for r, t, e in zip(first_results, truth, export_rows, strict=True)
          if t["kind"] == "lb"]
    assert lb
    for res, src in lb:
        assert src["unit"] in ("lb", "[lb_ap]")
        assert float(res["weight_kg"]) == float(src["weight"]) * LB_KG, res
    assert sum(res["verdict"] == "accepted" for res, _ in lb) >= 0.9 * len(lb)


def test_second_run_processes_nothing_and_changes_nothing(first_run, cli, db_iterdump):
    """Re-running on the same file and db: exit 0, nothing processed, same results and tables."""
    res = cli("process", first_run["export"], "--db", first_run["db"], "--out", first_run["out"],
              "--json")
    assert res.returncode == 0, res.stderr
    summary = _json(res.stdout)
    assert summary["processed_now"] == 0
    assert summary["resumed_from"] == summary["rows"] == first_run["summary"]["rows"]
    for key in ("accepted", "rejected", "invalid", "duplicate", "late"):
        assert summary[key] == first_run["summary"][key]
    assert first_run["out"].read_bytes() == first_run["results_bytes"]
    assert db_iterdump(first_run["db"]) == first_run["dump"]


def test_metrics_file_is_parseable_prometheus_text(first_run):
    """`--metrics-file` writes Prometheus text whose reading counter adds up to the rows."""
    text = first_run["prom"].read_text(encoding="utf-8")
    families = {f.name: f for f in text_string_to_metric_families(text)}
    readings = families["weightstream_readings"]
    total = sum(s.value for s in readings.samples if s.name == "weightstream_readings_total")
    assert total == first_run["summary"]["rows"]
    by_verdict: Counter[str] = Counter()
    for s in readings.samples:
        if s.name == "weightstream_readings_total":
            by_verdict[s.labels["verdict"]] += s.value
    assert by_verdict["invalid"] == first_run["summary"]["invalid"]


# ---------------------------------------------------------------------------------------------
# A synthetic export with hand-made bad lines appended


def _hand(i: int, weight: str, unit: str = "kg", *, user: str | None = None) -> bytes:
    user = user or f"hand-user-{i:02d}"
    return (f"hand-{i:02d},{user},2024-06-01 09:00:00,2024-06-01 08:00:00,patient-device,"
            f"{weight},{unit}").encode()


#: (line content, terminator, expected verdict, expected reason); None verdict = blank line.
HAND_LINES: list[tuple[bytes, bytes, str | None, str | None]] = [
    (_hand(1, "80").rsplit(b",", 1)[0], b"\n", "invalid", "malformed_row"),  # 6 fields
    (_hand(2, "80") + b",extra", b"\r\n", "invalid", "malformed_row"),  # 8 fields
    (_hand(3, "80").replace(b"2024-06-01 09", b'"2024-06-01 09'), b"\n", "invalid",
     "malformed_row"),  # unbalanced quote ...
    (_hand(4, "80.5"), b"\n", "accepted", "ok"),  # ... and the good line after it
    (_hand(5, "8\x000"), b"\n", "invalid", "malformed_row"),  # NUL byte
    (_hand(6, "80").replace(b"hand-user-06", b"hand-user-\xff\xfe"), b"\n", "invalid",
     "malformed_row"),  # not UTF-8
    (b"", b"\n", None, None),
    (b"   \t", b"\r\n", None, None),
    (_hand(7, "80").replace(b"patient-device", b"x" * 20_000), b"\n", "invalid", "malformed_row"),
    (_hand(8, "nan"), b"\n", "invalid", "non_finite"),
    (_hand(9, "inf"), b"\r\n", "invalid", "non_finite"),
    (_hand(10, "-Infinity"), b"\n", "invalid", "non_finite"),
    (_hand(11, "1e309"), b"\n", "invalid", "non_finite"),
    (_hand(12, " 72 "), b"\n", "accepted", "ok"),
    (_hand(13, '"72,5"'), b"\n", "invalid", "not_a_number"),
    (_hand(14, "72,5"), b"\n", "invalid", "malformed_row"),  # unquoted: one field too many
    (_hand(15, "７２"), b"\n", "invalid", "not_a_number"),
    (_hand(16, "-0"), b"\n", "invalid", "non_positive"),
    (_hand(17, "0"), b"\r", "invalid", "non_positive"),  # a bare CR ends a line too
    (_hand(18, "-70"), b"\n", "invalid", "non_positive"),
    (_hand(19, "27.5", "kg/m2"), b"\n", "invalid", "unit_is_bmi"),
    (_hand(20, "1.95", "m2"), b"\n", "invalid", "unit_is_bsa"),
    (_hand(21, "80", "furlong"), b"\n", "invalid", "unknown_unit"),
    (_hand(22, "176.4", "[lb_ap]"), b"\n", "accepted", "ok"),
    (_hand(23, "150.2", "lb"), b"\n", "accepted", "ok"),
    (b'"hand-24","hand-user-24","2024-06-01 09:00:00","2024-06-01 08:00:00",'
     b'"patient-device","81.0","kg"', b"\n", "accepted", "ok"),
    (b'hand-25,"hand-user-25"x,2024-06-01 09:00:00,2024-06-01 08:00:00,patient-device,80,kg',
     b"\n", "invalid", "malformed_row"),  # text after a closing quote
    (_hand(26, "12", "kg"), b"", "invalid", "out_of_range"),  # last line, no terminator
]


@pytest.fixture(scope="module")
def messy_run(tmp_path_factory, synth_export, cli, results_of) -> dict[str, Any]:
    """BOM + the shared export with CRLF endings + every hand-made bad line; processed once."""
    work = tmp_path_factory.mktemp("cli-messy")
    path, db, out = work / "messy.csv", work / "ws.db", work / "results.csv"
    synth_lines = synth_export.path.read_bytes().splitlines()
    content = [b"\xef\xbb\xbf" + synth_lines[0] + b"\r\n"]
    content += [line + b"\r\n" for line in synth_lines[1:]]
    expected: dict[int, tuple[str, str, bytes]] = {}
    for text, end, verdict, reason in HAND_LINES:
        content.append(text + end)
        if verdict is not None:
            expected[len(content)] = (verdict, reason, text)
    path.write_bytes(b"".join(content))
    res = cli("process", path, "--db", db, "--out", out, "--json")
    assert res.returncode == 0, res.stderr
    return {"results": results_of(out), "expected": expected, "summary": _json(res.stdout),
            "synth_rows": len(synth_lines) - 1}


def test_hand_made_bad_lines_each_get_their_own_result(messy_run):
    """Each malformed or odd line gets one result row with its line number and the right reason."""
    by_row = {int(r["row"]): r for r in messy_run["results"]}
    problems = []
    for line, (verdict, reason, text) in messy_run["expected"].items():
        got = by_row.get(line)
        if got is None or (got["verdict"], got["reason"]) != (verdict, reason):
            problems.append((line, text[:60], verdict, reason,
                             got and (got["verdict"], got["reason"], got["message"])))
        elif verdict == "invalid" and not got["message"].startswith(f"line {line}:"):
            problems.append((line, "message lacks its line number", got["message"]))
    assert not problems, "\n".join(map(str, problems))


def test_messy_file_accounts_for_every_non_blank_line(messy_run):
    """Blank lines get no result; every other line exactly one, in line order."""
    rows = [int(r["row"]) for r in messy_run["results"]]
    n_synth = messy_run["synth_rows"]
    assert rows == list(range(2, n_synth + 2)) + sorted(messy_run["expected"])
    assert messy_run["summary"]["rows"] == len(rows)


def test_good_values_in_the_messy_file_are_read_exactly(messy_run):
    """`' 72 '` is 72 kg, a quoted row is read, `[lb_ap]` and `lb` are pounds x 0.45359237."""
    by_user = {r["user_id"]: r for r in messy_run["results"] if r["user_id"]}
    assert float(by_user["hand-user-12"]["weight_kg"]) == 72.0
    assert float(by_user["hand-user-22"]["weight_kg"]) == 176.4 * LB_KG
    assert float(by_user["hand-user-23"]["weight_kg"]) == 150.2 * LB_KG
    assert float(by_user["hand-user-24"]["weight_kg"]) == 81.0
    after_quote = by_user["hand-user-04"]
    assert after_quote["verdict"] == "accepted" and float(after_quote["filtered_weight"]) > 0


def test_bom_and_crlf_change_no_synthetic_result(messy_run, first_results):
    """The synthetic rows of the BOM/CRLF file get exactly the results of the plain file."""
    n = messy_run["synth_rows"]
    assert messy_run["results"][:n] == first_results


# ---------------------------------------------------------------------------------------------
# The README's scale


def test_synth_200_by_50_every_row_accounted_for(tmp_path, cli, cli_fast, results_of):
    """`synth --users 200 --per-user 50 --seed 1`, then `process`: verdicts sum to every row."""
    export, truth = tmp_path / "export.csv", tmp_path / "truth.csv"
    res = cli_fast("synth", "--users", "200", "--per-user", "50", "--seed", "1",
              "--out", export, "--truth", truth)
    assert res.returncode == 0, res.stderr
    assert _data_lines(export) == 10_000
    res = cli("process", export, "--db", tmp_path / "ws.db", "--out", tmp_path / "r.csv",
              "--json")
    assert res.returncode == 0, res.stderr
    s = _json(res.stdout)
    verdicts = sum(s[v] for v in ("accepted", "rejected", "invalid", "duplicate", "late"))
    assert verdicts == s["rows"] == s["processed_now"] == 10_000
    assert sum(s["invalid_by_reason"].values()) == s["invalid"]
    assert sum(s["rejected_by_reason"].values()) == s["rejected"]
    rows = [int(r["row"]) for r in results_of(tmp_path / "r.csv")]
    assert rows == list(range(2, 10_002))


# ---------------------------------------------------------------------------------------------
# Whole-input errors


def _one_line(stderr: str) -> str:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    return lines[0]


def test_missing_required_column_exits_66_naming_it(tmp_path, cli):
    """A header without a weight column exits 66 with one stderr line naming `weight`."""
    path = tmp_path / "nocol.csv"
    path.write_text("id,user_id,effectiveDateTime,source_type,mass,unit\n"
                    "a,u1,2024-01-01,patient-device,80,kg\n", encoding="utf-8")
    res = cli("process", path, "--db", tmp_path / "ws.db")
    assert res.returncode == 66
    line = _one_line(res.stderr)
    assert "weight" in line and "missing" in line
    assert not (tmp_path / "ws.db").exists()  # refused before any database is created


def test_empty_file_exits_65(tmp_path, cli_fast):
    """An empty file (no header) exits 65 with one line saying so."""
    path = tmp_path / "empty.csv"
    path.write_bytes(b"")
    res = cli_fast("process", path, "--db", tmp_path / "ws.db")
    assert res.returncode == 65
    assert "empty" in _one_line(res.stderr)
    assert not (tmp_path / "ws.db").exists()


def test_header_only_file_is_a_no_op(tmp_path, cli_fast):
    """A file with a header and no data rows processes nothing and exits 0."""
    path = tmp_path / "header.csv"
    path.write_text(HEADER + "\n", encoding="utf-8")
    res = cli_fast("process", path, "--db", tmp_path / "ws.db", "--json")
    assert res.returncode == 0, res.stderr
    assert _json(res.stdout)["rows"] == 0


@pytest.mark.parametrize("kind", ["elf", "png", "utf16", "random"])
def test_binary_or_non_csv_file_exits_nonzero_with_a_clear_message(tmp_path, cli_fast, kind):
    """Binary data, UTF-16 text or random bytes exit non-zero with one clear stderr line."""
    rng = random.Random(7)  # seed printed on failure via the parameter
    content = {
        "elf": b"\x7fELF\x02\x01\x01\x00" + rng.randbytes(2048),
        "png": b"\x89PNG\r\n\x1a\n" + rng.randbytes(2048),
        "utf16": (HEADER + "\nx,u,2024-01-01,2024-01-01,p,80,kg\n").encode("utf-16"),
        "random": bytes(rng.randrange(128, 256) for _ in range(4096)),
    }[kind]
    path = tmp_path / f"{kind}.csv"
    path.write_bytes(content)
    res = cli_fast("process", path, "--db", tmp_path / "ws.db")
    assert res.returncode in (65, 66), (res.returncode, res.stderr)
    line = _one_line(res.stderr)
    assert "Traceback" not in res.stderr
    assert any(w in line for w in ("not a CSV", "UTF-16", "not UTF-8", "missing column")), line


def test_nonexistent_input_exits_nonzero(tmp_path, cli_fast):
    """A path that does not exist exits non-zero and names the file; no database is created."""
    res = cli_fast("process", tmp_path / "nope.csv", "--db", tmp_path / "ws.db")
    assert res.returncode != 0
    assert "nope.csv" in _one_line(res.stderr)
    assert not (tmp_path / "ws.db").exists()


# ---------------------------------------------------------------------------------------------
# Columns


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def test_explicit_column_mapping_reads_renamed_headers(tmp_path, cli_fast, results_of):
    """`--column canonical=header` maps every field of a file with unfamiliar header names."""
    path = _write(tmp_path / "renamed.csv", [
        "ref,who,when_measured,kilos,measure,origin",
        "r1,alice,2024-03-01 08:00:00,80.0,kg,patient-device",
        "r2,alice,2024-03-02 08:00:00,80.4,kg,patient-device",
        "r3,bob,2024-03-01 08:00:00,200,lb,patient-upload",
    ])
    out = tmp_path / "r.csv"
    res = cli_fast("process", path, "--db", tmp_path / "ws.db", "--out", out,
              "--column", "user_id=who", "--column", "timestamp=when_measured",
              "--column", "weight=kilos", "--column", "unit=measure",
              "--column", "source=origin", "--column", "id=ref")
    assert res.returncode == 0, res.stderr
    rows = results_of(out)
    assert [(r["reading_id"], r["user_id"], r["verdict"]) for r in rows] == [
        ("r1", "alice", "accepted"), ("r2", "alice", "accepted"), ("r3", "bob", "accepted")]
    assert rows[2]["source"] == "patient-upload"
    assert float(rows[2]["weight_kg"]) == 200 * LB_KG
    assert rows[0]["timestamp"] == "2024-03-01T08:00:00+00:00"


def test_column_mapping_to_an_absent_header_exits_66(tmp_path, cli_fast):
    """`--column weight=kilos` on a file without `kilos` exits 66 naming it in one line."""
    path = _write(tmp_path / "plain.csv", [HEADER, "a,u,2024-01-01,2024-01-01,p,80,kg"])
    res = cli_fast("process", path, "--db", tmp_path / "ws.db", "--column", "weight=kilos")
    assert res.returncode == 66
    assert "kilos" in _one_line(res.stderr)


def test_column_option_without_equals_is_a_usage_error(tmp_path, cli_fast):
    """`--column weight` (no `=`) is refused as a usage error before anything is read."""
    path = _write(tmp_path / "plain.csv", [HEADER, "a,u,2024-01-01,2024-01-01,p,80,kg"])
    res = cli_fast("process", path, "--db", tmp_path / "ws.db", "--column", "weight")
    assert res.returncode == 64
    assert "canonical=header" in res.stderr


def test_common_aliases_are_recognised(tmp_path, cli_fast, results_of):
    """`patient_id`, `date`, `value`, `source` and `measurement_id` are found without options."""
    path = _write(tmp_path / "aliases.csv", [
        "measurement_id,patient_id,date,source,value",
        "m1,p1,2024-03-01,care-team-upload,91.5",
        "m2,p1,2024-03-02,care-team-upload,91.2",
    ])
    out = tmp_path / "r.csv"
    res = cli_fast("process", path, "--db", tmp_path / "ws.db", "--out", out)
    assert res.returncode == 0, res.stderr
    rows = results_of(out)
    assert [(r["reading_id"], r["user_id"], r["source"], r["weight_kg"], r["verdict"])
            for r in rows] == [("m1", "p1", "care-team-upload", "91.5", "accepted"),
                               ("m2", "p1", "care-team-upload", "91.2", "accepted")]


def test_effective_date_time_is_preferred_over_timestamp(tmp_path, cli_fast, results_of):
    """With both columns, the event time comes from `effectiveDateTime`, not `timestamp`."""
    path = _write(tmp_path / "both.csv", [
        "user_id,timestamp,effectiveDateTime,weight",
        "u1,2024-05-20 10:00:00,2024-03-01 07:30:00,70.0",
    ])
    out = tmp_path / "r.csv"
    res = cli_fast("process", path, "--db", tmp_path / "ws.db", "--out", out)
    assert res.returncode == 0, res.stderr
    assert results_of(out)[0]["timestamp"] == "2024-03-01T07:30:00+00:00"


# ---------------------------------------------------------------------------------------------
# Other commands


@pytest.fixture(scope="module")
def reset_user(first_results) -> str:
    """A user of the shared run with at least one reset beyond the initial one."""
    counts = Counter(r["user_id"] for r in first_results if r["reset_type"] in ("hard", "soft"))
    assert counts
    return counts.most_common(1)[0][0]


def test_state_prints_the_users_filtered_weight(first_run, first_results, cli_fast, reset_user):
    """`state USER` prints the user, the current filtered weight and the last readings."""
    res = cli_fast("state", reset_user, "--db", first_run["db"], "--last", "3")
    assert res.returncode == 0, res.stderr
    assert reset_user in res.stdout and "weight (kg)" in res.stdout
    accepted = sorted((r["timestamp"], float(r["filtered_weight"])) for r in first_results
                      if r["user_id"] == reset_user and r["verdict"] == "accepted")
    assert f"{accepted[-1][1]:.2f} ±" in res.stdout
    assert "last readings" in res.stdout


def test_state_of_unknown_user_and_missing_db(tmp_path, first_run, cli_fast):
    """`state` of an unknown user exits 1; on a missing database 74, creating nothing."""
    res = cli_fast("state", "no-such-user", "--db", first_run["db"])
    assert res.returncode == 1 and "unknown user" in res.stderr
    res = cli_fast("state", "u", "--db", tmp_path / "absent.db")
    assert res.returncode == 74 and "no database" in _one_line(res.stderr)
    assert not (tmp_path / "absent.db").exists()


def test_resets_lists_the_users_audit_records(first_run, cli_fast, reset_user):
    """`resets --user U --json` lists the user's committed initial reset first, then others."""
    res = cli_fast("resets", "--db", first_run["db"], "--user", reset_user, "--json")
    assert res.returncode == 0, res.stderr
    audits = json.loads(res.stdout)
    assert audits[0]["type"] == "initial" and audits[0]["trigger"] == "first reading"
    assert {a["user_id"] for a in audits} == {reset_user}
    assert len(audits) >= 2 and all(a["outcome"] == "committed" for a in audits)
    table = cli_fast("resets", "--db", first_run["db"], "--outcome", "rolled_back")
    assert table.returncode == 0 and "0 reset transactions" in table.stdout


def test_recover_reports_rebuild_equals_live(first_run, cli_fast, reset_user):
    """`recover USER` replays the stored history and finds it equal to the live state."""
    res = cli_fast("recover", reset_user, "--db", first_run["db"])
    assert res.returncode == 0, res.stderr
    assert "rebuilt state equals live state" in res.stdout
    assert "0 results would change" in res.stdout


def test_every_command_help_has_an_example():
    """`--help` of every command contains an 'Example'."""
    from typer.testing import CliRunner

    from weightstream.cli import app

    runner = CliRunner()
    commands = [c.name or c.callback.__name__ for c in app.registered_commands]
    assert {"process", "state", "resets", "recover", "synth"} <= set(commands), commands
    for command in commands:
        res = runner.invoke(app, [command, "--help"])
        assert res.exit_code == 0, (command, res.output)
        assert "Example" in res.output, command


@pytest.mark.parametrize("args", [["config", "--db", "x.db"],
                                  ["synth", "--out", "x.csv", "--db", "x.db"],
                                  ["synth", "--out", "x.csv", "--config", "c.toml"]])
def test_options_that_did_nothing_are_gone(
    args: list[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``synth --db/--config`` and ``config --db`` are usage errors, not silently ignored."""
    from typer.testing import CliRunner

    from weightstream.cli import app

    monkeypatch.chdir(tmp_path)
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2 and "No such option" in res.output
    assert not (tmp_path / "x.csv").exists()

"""scripts/report.py --update: the tables a document marks are rewritten from the runs, and only those."""

import subprocess
import sys
from pathlib import Path

import pytest

from longrec_core.report import MissingRuns, rewrite_marked

ROOT = Path(__file__).resolve().parents[1]
REPORT = [sys.executable, str(ROOT / "scripts" / "report.py")]

DOC = """# Results

Prose before, kept as it is.

<!-- report: made -->
| a | b |
|---|---|
| 1 | 2 |
<!-- /report -->

Prose between.
<!-- report: absent -->
| old | table |
<!-- /report -->
Prose after.
"""


def _missing() -> list[str]:
    raise MissingRuns("runs/x: no evaluated run of last-w50")


def test_marked_tables_are_replaced_and_those_without_runs_kept() -> None:
    said: list[str] = []
    out = rewrite_marked(
        DOC, {"made": lambda: ["| a | b |", "|---|---|", "| 3 | 4 |"], "absent": _missing}, said.append
    )
    assert out == DOC.replace("| 1 | 2 |", "| 3 | 4 |")
    assert said == ["made: made from the runs", "absent: kept as it was (runs/x: no evaluated run of last-w50)"]


def test_a_key_the_report_does_not_make_is_named_before_anything_is_made() -> None:
    made: list[str] = []
    with pytest.raises(KeyError, match="absent"):
        rewrite_marked(DOC, {"made": lambda: made.append("x") or []}, print)
    assert made == []


def test_update_keeps_every_table_whose_runs_are_absent(tmp_path: Path) -> None:
    doc = tmp_path / "RESULTS.md"
    keys = sorted(_report_script().document_tables(tmp_path).keys())
    text = "".join(f"<!-- report: {k} -->\n| old | {k} |\n<!-- /report -->\n" for k in keys)
    doc.write_text(text)
    runs = tmp_path / "runs"
    runs.mkdir()
    r = subprocess.run([*REPORT, str(runs), "--update", str(doc)], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert doc.read_text() == text
    assert [line.split(":")[0] for line in r.stderr.splitlines() if "kept as it was" in line] == keys


def test_update_refuses_an_unknown_key_and_leaves_the_document(tmp_path: Path) -> None:
    doc = tmp_path / "RESULTS.md"
    doc.write_text(DOC)
    r = subprocess.run([*REPORT, str(tmp_path), "--update", str(doc)], capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [f"error: {doc} marks tables the report does not make: absent, made"]
    assert doc.read_text() == DOC


def _report_script():  # scripts/report.py as a module
    import importlib.util

    spec = importlib.util.spec_from_file_location("report_script", ROOT / "scripts" / "report.py")
    assert spec is not None and spec.loader is not None
    report = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(report)
    return report


def test_the_results_document_marks_only_tables_the_report_makes() -> None:
    text = (ROOT / "docs" / "RESULTS.md").read_text()
    keys = set(_report_script().document_tables(ROOT / "runs").keys())
    marked = {line.split()[2] for line in text.splitlines() if line.startswith("<!-- report: ")}
    assert marked and marked <= keys

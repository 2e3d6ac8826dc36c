"""The benchmark command keeps working; its numbers are never asserted.

Runs ``benchmarks/backward_speed.py --tiny`` as CI and a developer do, in a
subprocess: it must exit 0, print its tables and targets, and write its results
only where it is told to.
"""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import layers.generated

ROOT = Path(__file__).resolve().parents[1]
COMMAND = [sys.executable, str(ROOT / "benchmarks" / "backward_speed.py"), "--tiny"]


def run_benchmark(*arguments):
    return subprocess.run(
        [*COMMAND, *arguments], cwd=ROOT, capture_output=True, text=True, timeout=300
    )


def test_tiny_run_prints_the_tables_and_writes_where_told(tmp_path):
    completed = run_benchmark("--out", str(tmp_path))

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "| bwd generated ÷ PyTorch" in completed.stdout
    assert "| bwd peak, generated" in completed.stdout
    assert "not judged (--tiny)" in completed.stdout
    assert "`python -m codegen relu`" in completed.stdout

    results = json.loads((tmp_path / "benchmarks" / "results.json").read_text())
    timed = {result["layer"] for result in results["results"]}
    assert timed == set(layers.generated.__all__)
    assert {result["dtype"] for result in results["results"]} == {
        "float32",
        "float64",
    }
    assert "| bwd generated ÷ PyTorch" in (tmp_path / "benchmarks.md").read_text()
    if importlib.util.find_spec("matplotlib") is not None:
        assert (tmp_path / "benchmarks" / "backward.png").stat().st_size > 0


def test_tiny_run_without_out_writes_nothing():
    docs = ROOT / "docs" / "benchmarks"
    before = {path: path.stat().st_mtime_ns for path in docs.glob("*")}

    completed = run_benchmark("--no-build", "--cases", "flatten", "--dtypes", "float64")

    assert completed.returncode == 0, completed.stdout + completed.stderr
    assert "| Flatten B=2 C=2 3x3 | float64 |" in completed.stdout
    assert "nothing written" in completed.stdout
    assert {path: path.stat().st_mtime_ns for path in docs.glob("*")} == before

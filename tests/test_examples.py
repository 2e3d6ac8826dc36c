"""The examples run as written and report agreement."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def test_digits_example_agrees_with_reference_and_finite_differences():
    pytest.importorskip("sklearn", reason="scikit-learn (the examples extra) is absent")
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "digits_forward_backward.py")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert "same Dropout mask from the same seed: True" in result.stdout
    numbers = [float(n) for n in re.findall(r"(\d\.\d+e[-+]\d+)", result.stdout)]
    assert len(numbers) == 7, result.stdout
    assert max(numbers[:-1]) < 1e-10, result.stdout
    assert numbers[-1] < 1e-6, result.stdout

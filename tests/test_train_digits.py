"""The training example, shortened: its loss falls and it reports the accuracy."""

import importlib.util
import re
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("sklearn", reason="scikit-learn (the examples extra) is absent")
pytest.importorskip("tqdm", reason="tqdm (the examples extra) is absent")

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "train_digits.py"


def load_example():
    spec = importlib.util.spec_from_file_location("train_digits", EXAMPLE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_two_epochs_lower_the_loss_and_end_with_the_test_accuracy(capsys):
    losses, accuracy = load_example().main(["--epochs", "2"])

    assert losses.shape[0] == 2
    assert np.all(np.isfinite(losses))
    # Two epochs take the mean loss from about 1.0 to about 0.35.
    assert losses[-1].mean() < 0.6 * losses[0].mean(), losses.mean(axis=1)

    last_line = capsys.readouterr().out.strip().splitlines()[-1]
    match = re.fullmatch(r"test accuracy: (\d\.\d{4})", last_line)
    assert match, last_line
    assert float(match.group(1)) == pytest.approx(accuracy, abs=1e-4)
    assert accuracy > 0.8


def test_the_same_seed_gives_the_same_run():
    example = load_example()
    runs = [example.main(["--epochs", "1", "--no-progress"]) for _ in range(2)]
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert runs[0][1] == runs[1][1]

"""Tests of compare_layers, the one-call check of a handwritten layer.

The reference layers pass against the generated ones; layers with the classic
mistakes of the course fail, and the report names the quantity and the mode.
"""

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from layers import generated, gradcheck, reference
from layers.check import check_gradients, compare_layers
from layers.module import Module
from layers.random import draw_keep_mask
from tests.test_gradcheck import ScalingWithoutGamma, ScalingWithoutInput

ROOT = Path(__file__).resolve().parent.parent


class BatchNormalizationWithZeroGradient(reference.BatchNormalization):
    """A zero training input gradient: right for an all-ones output_grad only."""

    def _compute_input_grad(self, input, output_grad):
        if self.training:
            return np.zeros_like(input)
        return super()._compute_input_grad(input, output_grad)


class BatchNormalizationWithBatchStatisticsInEvaluation(reference.BatchNormalization):
    """Normalizes with the batch's statistics in evaluation too."""

    def _compute_output(self, input):
        if self.training:
            return super()._compute_output(input)
        centered = input - input.mean(axis=0)
        return centered / np.sqrt(np.mean(centered**2, axis=0) + self.EPS)

    def _compute_input_grad(self, input, output_grad):
        was_training, self.training = self.training, True
        try:
            return super()._compute_input_grad(input, output_grad)
        finally:
            self.training = was_training


class BatchNormalizationWithFrozenStatistics(reference.BatchNormalization):
    """Never updates its moving statistics."""

    def _compute_output(self, input):
        output = super()._compute_output(input)
        self.moving_mean = np.zeros(input.shape[1])
        self.moving_variance = np.ones(input.shape[1])
        return output


class Conv2dWithoutFlip(reference.Conv2d):
    """Correlates the output gradient with the kernel as it is, not flipped."""

    def _compute_input_grad(self, input, output_grad):
        kernel = self.W
        self.W = kernel[:, :, ::-1, ::-1]  # the parent's flip now cancels out
        try:
            return super()._compute_input_grad(input, output_grad)
        finally:
            self.W = kernel


class Conv2dOverwritingGradients(reference.Conv2d):
    """Sets the parameter gradients to this batch's instead of adding to them."""

    def _update_parameters_grad(self, input, output_grad):
        self.zero_grad()
        super()._update_parameters_grad(input, output_grad)


class DropoutRedrawingInBackward(reference.Dropout):
    """Draws a new mask in backward instead of reusing the forward's."""

    def _compute_input_grad(self, input, output_grad):
        if self.training:
            self.mask = draw_keep_mask(self.generator, input.shape, self.p, input.dtype)
        return super()._compute_input_grad(input, output_grad)


class DropoutIgnoringEvaluation(reference.Dropout):
    """Keeps dropping in evaluation mode."""

    def evaluate(self):
        pass


class DropoutWithScaledMask(reference.Dropout):
    """Correct, but keeps its mask with the scale folded in: 0 or 1 / (1 - p)."""

    def _compute_output(self, input):
        output = super()._compute_output(input)
        if self.training:
            self.mask = self.mask * self.scale
        return output

    def _compute_input_grad(self, input, output_grad):
        if self.training:
            return output_grad * self.mask
        return super()._compute_input_grad(input, output_grad)


class Noisy(Module):
    """y = x + noise: a random forward that keeps no mask."""

    def __init__(self, seed):
        super().__init__()
        self.generator = np.random.default_rng(seed)

    def _compute_output(self, input):
        return input + self.generator.standard_normal(input.shape)

    def _compute_input_grad(self, input, output_grad):
        return output_grad


class ScalingReturningCopies(reference.ChannelwiseScaling):
    """Hands out copies of its parameters, which the checker cannot set."""

    def get_parameters(self):
        return [self.gamma.copy(), self.beta.copy()]


# By class name: how to build the layer from a class and a seed for its
# parameters or masks, and the shape of its input.
LAYERS = {
    "BatchNormalization": (lambda cls, seed: cls(alpha=0.3), (6, 3)),
    "ChannelwiseScaling": (lambda cls, seed: cls(4, rng=seed), (5, 4)),
    "Conv2d": (lambda cls, seed: cls(2, 3, 3, rng=seed), (2, 2, 5, 5)),
    "Dropout": (lambda cls, seed: cls(0.4, rng=seed), (4, 3, 2)),
}


def compare(candidate_class, layer, **options):
    """Checks ``candidate_class`` against the generated ``layer``."""
    build, input_shape = LAYERS[layer]
    oracle = build(getattr(generated, layer), 0)
    return compare_layers(build(candidate_class, 1), oracle, input_shape, **options)


def failed(report):
    return {(c.mode, c.quantity) for c in report.failures}


@pytest.mark.parametrize("layer", LAYERS)
def test_reference_layers_pass_against_generated(layer):
    report = compare(getattr(reference, layer), layer, rng=0)
    assert report.passed, str(report)
    assert "compare_layers passed" in str(report)


def test_report_lists_every_quantity_in_each_mode():
    report = compare(reference.Conv2d, "Conv2d", rng=0)
    rows = [(c.mode, c.quantity, c.status) for c in report.comparisons]
    quantities = ["output", "input_grad", "grad_W", "grad_b"]
    assert rows == [(m, q, "ok") for m in ("train", "evaluate") for q in quantities]
    assert all(c.max_abs_error < 1e-12 for c in report.comparisons)


BOTH = ("train", "evaluate")
# A wrong layer, the generated layer it is checked against and the rows that
# must fail, as (mode, quantity).
WRONG_LAYERS = [
    (ScalingWithoutGamma, "ChannelwiseScaling", {(m, "input_grad") for m in BOTH}),
    (ScalingWithoutInput, "ChannelwiseScaling", {(m, "grad_gamma") for m in BOTH}),
    (
        BatchNormalizationWithZeroGradient,
        "BatchNormalization",
        {("train", "input_grad")},
    ),
    (
        BatchNormalizationWithBatchStatisticsInEvaluation,
        "BatchNormalization",
        {("evaluate", "output"), ("evaluate", "input_grad")},
    ),
    (
        BatchNormalizationWithFrozenStatistics,
        "BatchNormalization",
        {("evaluate", "output"), ("evaluate", "input_grad")},
    ),
    (Conv2dWithoutFlip, "Conv2d", {(m, "input_grad") for m in BOTH}),
    (
        Conv2dOverwritingGradients,
        "Conv2d",
        {(m, q) for m in BOTH for q in ("grad_W", "grad_b")},
    ),
    (DropoutRedrawingInBackward, "Dropout", {("train", "input_grad")}),
    (
        DropoutIgnoringEvaluation,
        "Dropout",
        {("evaluate", "output"), ("evaluate", "input_grad")},
    ),
]


@pytest.mark.parametrize(
    ("candidate_class", "layer", "wrong"),
    WRONG_LAYERS,
    ids=[case[0].__name__ for case in WRONG_LAYERS],
)
def test_wrong_layers_fail_naming_the_quantity(candidate_class, layer, wrong):
    report = compare(candidate_class, layer, rng=0)
    assert not report.passed
    assert failed(report) == wrong
    text = str(report)
    assert text.startswith("compare_layers FAILED")
    for mode, quantity in wrong:
        assert re.search(rf"{mode}\s+{quantity}\s.*FAILED", text), text


def test_the_upstream_gradient_is_random():
    # The zero gradient is right for an all-ones output_grad; whatever seed is
    # drawn, the checker must catch it.
    for seed in range(5):
        report = compare(
            BatchNormalizationWithZeroGradient, "BatchNormalization", rng=seed
        )
        assert ("train", "input_grad") in failed(report)


def test_each_mode_gets_a_fresh_input():
    # With alpha = 0 the moving statistics are those of the training batch; fed
    # that batch again, evaluation with batch statistics would look right.
    candidate = BatchNormalizationWithBatchStatisticsInEvaluation(alpha=0.0)
    oracle = generated.BatchNormalization(alpha=0.0)
    report = compare_layers(candidate, oracle, (6, 3), rng=0)
    assert ("evaluate", "output") in failed(report)


def test_dropout_training_output_is_skipped_with_the_reason():
    report = compare(reference.Dropout, "Dropout", rng=0)
    (row,) = [
        c for c in report.comparisons if (c.mode, c.quantity) == ("train", "output")
    ]
    assert row.status == "skipped" and not row.passed and not row.failed
    assert "random" in row.note and "mask" in row.note
    assert "train output: the forward is random" in str(report)
    statuses = {(c.mode, c.quantity): c.status for c in report.comparisons}
    assert statuses["train", "input_grad"] == "ok"
    assert statuses["evaluate", "output"] == "ok"


def test_dropout_mask_is_shared_in_the_candidates_encoding():
    report = compare(DropoutWithScaledMask, "Dropout", rng=0)
    assert report.passed, str(report)


def test_random_forward_without_a_mask_compares_nothing_and_does_not_pass():
    report = compare_layers(Noisy(0), Noisy(1), (3, 2), rng=0, modes=("train",))
    assert {c.status for c in report.comparisons} == {"skipped"}
    assert "no `mask`" in report.comparisons[0].note
    assert not report.passed and not report.failures


def test_parameters_are_copied_into_the_candidates_arrays():
    candidate = reference.Conv2d(2, 3, 3, rng=1)
    oracle = generated.Conv2d(2, 3, 3, rng=0)
    kernel = candidate.W
    compare_layers(candidate, oracle, (1, 2, 4, 4), rng=0, modes=("evaluate",))
    assert candidate.W is kernel
    assert np.array_equal(candidate.W, oracle.W)
    assert np.array_equal(candidate.b, oracle.b)
    assert not candidate.training
    assert all(not grad.any() for grad in candidate.get_parameters_grad())


def test_the_same_seed_gives_the_same_report():
    first = compare(reference.Conv2d, "Conv2d", rng=3)
    assert compare(reference.Conv2d, "Conv2d", rng=3) == first


def test_a_parameter_of_another_shape_is_refused_by_position():
    with pytest.raises(
        ValueError, match=r"parameter 0 \(W\).*\(3, 2, 5, 5\); got \(3, 2, 3, 3\)"
    ):
        compare_layers(
            reference.Conv2d(2, 3, 3), generated.Conv2d(2, 3, 5), (1, 2, 5, 5)
        )


def test_a_different_number_of_parameters_is_refused():
    with pytest.raises(ValueError, match=r"as many parameters as oracle, 2"):
        compare_layers(
            reference.BatchNormalization(), generated.ChannelwiseScaling(3), (4, 3)
        )


def test_parameters_handed_out_as_copies_are_refused():
    with pytest.raises(ValueError, match=r"parameter 0 \(gamma\).*not copies"):
        compare(ScalingReturningCopies, "ChannelwiseScaling")


@pytest.mark.parametrize(
    ("arguments", "error", "message"),
    [
        ({"candidate": object()}, TypeError, r"candidate as a Module.*without forward"),
        ({"oracle": 3}, TypeError, r"oracle as a Module"),
        ({"input_shape": 5}, TypeError, r"input_shape as a tuple.*got int 5"),
        ({"input_shape": ()}, ValueError, r"input_shape as a non-empty tuple"),
        ({"input_shape": (5, 0)}, ValueError, r"input_shape.*positive ints"),
        ({"rtol": -1.0}, ValueError, r"rtol as a finite non-negative"),
        ({"atol": float("nan")}, ValueError, r"atol as a finite non-negative"),
        ({"modes": "train"}, TypeError, r"modes as a tuple.*\('train',\)"),
        ({"modes": ("train", "test")}, ValueError, r"modes as a non-empty tuple"),
        ({"modes": ()}, ValueError, r"modes as a non-empty tuple"),
        ({"modes": ("train", "train")}, ValueError, r"each of modes once"),
        ({"rng": "seed"}, TypeError, r"rng as None, an int seed"),
    ],
    ids=lambda value: "-".join(value) if isinstance(value, dict) else None,
)
def test_bad_arguments_are_refused_by_name(arguments, error, message):
    call = {
        "candidate": reference.ChannelwiseScaling(4),
        "oracle": generated.ChannelwiseScaling(4),
        "input_shape": (5, 4),
    }
    call.update(arguments)
    positional = [call.pop(name) for name in ("candidate", "oracle", "input_shape")]
    with pytest.raises(error, match=message):
        compare_layers(*positional, **call)


def test_a_module_compared_with_itself_is_refused():
    layer = generated.ChannelwiseScaling(4)
    with pytest.raises(ValueError, match=r"the same object twice"):
        compare_layers(layer, layer, (5, 4))


def test_check_gradients_is_the_numerical_checker_of_gradcheck():
    assert check_gradients is gradcheck.check_gradients


def test_check_imports_without_sympy():
    code = 'import sys; sys.modules["sympy"] = None; import layers.check'
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)


def readme_example():
    """The code block of README.md between the check-example markers."""
    text = (ROOT / "README.md").read_text()
    match = re.search(
        r"<!-- check-example -->\n```python\n(.*?)```\n<!-- /check-example -->",
        text,
        re.DOTALL,
    )
    assert match, "README.md has no check-example block"
    return match.group(1)


def run_readme_example():
    namespace = {"__name__": "readme_example"}
    exec(compile(readme_example(), "README.md", "exec"), namespace)
    return namespace


def test_readme_example_runs_and_passes(capsys):
    namespace = run_readme_example()
    assert namespace["report"].passed
    output = capsys.readouterr().out
    assert "compare_layers passed" in output and "gradient check of" in output


def test_readme_claim_about_forgetting_gamma_holds():
    my_scaling = run_readme_example()["MyScaling"]

    class MyScalingWithoutGamma(my_scaling):
        def _compute_input_grad(self, input, output_grad):
            return output_grad

    report = compare_layers(
        MyScalingWithoutGamma(4), generated.ChannelwiseScaling(4, rng=0), (8, 4), rng=0
    )
    assert failed(report) == {("train", "input_grad"), ("evaluate", "input_grad")}

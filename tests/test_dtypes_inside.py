"""Float32 stays float32 inside the generated passes, not only at their ends.

``layers.dtypes.wide_intermediates`` traces every line of a layer's passes and
reports the input-sized local arrays wider than the input.
"""

import numpy as np
import pytest

from layers.dtypes import wide_intermediates
from layers.generated import BatchNormalization, ClassNLLCriterion, MSECriterion
from layers.module import Module
from tests.helpers import normal
from tests.layer_cases import CRITERIA, each_case


@each_case(lambda case: case.id.startswith("generated") and case.name not in CRITERIA)
@pytest.mark.parametrize("training", [True, False], ids=["train", "evaluate"])
def test_float32_passes_hold_no_float64_arrays(case, training):
    layer = case.build()
    if not training:
        layer.evaluate()
    x = normal(case.shape).astype(np.float32)
    output_grad = normal(layer.forward(x).shape, seed=1).astype(np.float32)
    assert wide_intermediates(layer, x, output_grad) == {}


def test_float64_statistics_do_not_widen_a_float32_pass():
    """Moving statistics made by float64 training are read in float32 by a
    float32 pass, and keep their own dtype when float32 training updates them."""
    layer = BatchNormalization(alpha=0.5)
    layer.forward(normal((32, 6), seed=3))
    x = normal((32, 6), seed=4).astype(np.float32)
    output_grad = normal((32, 6), seed=5).astype(np.float32)
    for training in (False, True):
        layer.train() if training else layer.evaluate()
        assert wide_intermediates(layer, x, output_grad) == {}
    assert layer.moving_mean.dtype == layer.moving_variance.dtype == np.float64
    layer.evaluate()
    expected = (x - layer.moving_mean) / np.sqrt(layer.moving_variance + layer.EPS)
    np.testing.assert_allclose(layer.forward(x), expected, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "criterion, target",
    [
        (MSECriterion, normal((4, 3), seed=2)),
        (ClassNLLCriterion, np.array([0, 2, 1, 1])),
    ],
)
def test_float32_criteria_hold_no_float64_arrays(criterion, target):
    x = normal((4, 3)).astype(np.float32)
    assert wide_intermediates(criterion(), x, target=target) == {}


class Promoting(Module):
    """Doubles its input through a float64 intermediate."""

    def _compute_output(self, input):
        doubled = input * np.float64(2.0)
        return doubled.astype(input.dtype)

    def _compute_input_grad(self, input, output_grad):
        return 2 * output_grad


def test_the_trace_sees_a_float64_intermediate():
    x = normal((4, 3)).astype(np.float32)
    found = wide_intermediates(Promoting(), x, normal((4, 3)).astype(np.float32))
    assert found == {"_compute_output: doubled": ("float64", (4, 3))}

"""Properties of every generated layer over configurations Hypothesis draws.

For each layer Hypothesis draws the constructor's arguments, an input shape
(size-1 axes included), the mode and a seed for every number, then checks:

- generated == reference, where a reference exists (float64, both modes);
- generated == central differences, for the input and every parameter, under
  a random ``output_grad`` (float64);
- float32 in gives float32 out, equal to the float64 result to float32
  accuracy.

Fixed configurations are checked in ``test_generated_layers`` and
``test_catalog_layers``; here the configurations vary.
"""

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import array_shapes

from layers import generated, reference
from layers.gradcheck import check_gradients
from tests.helpers import (
    LossOf,
    ReplayGenerator,
    assert_runs_agree,
    away_from_zero,
    forward_backward,
    normal,
    randomize_parameters,
    spread_out,
)

SEEDS = st.integers(0, 2**16)
SIZES = st.integers(1, 4)
ANY_SHAPE = array_shapes(min_dims=1, max_dims=4, max_side=4)
# Few examples per layer keep the suite fast; every run draws new ones.
EXAMPLES = settings(max_examples=15, deadline=None)


@dataclass(frozen=True)
class Draw:
    """One configuration of a layer.

    Attributes:
        build: makes the layer from a package, ``generated`` or ``reference``.
        shape: the input shape.
        values: makes the float64 input from ``shape`` and a seed.
        training: the mode the layer is checked in.
        target: for a criterion, makes its target from the input shape and a
            seed; None for a layer.
    """

    build: Callable
    shape: tuple
    values: Callable = normal
    training: bool = True
    target: Callable = None


def prepare(draw, package, seed, dtype=np.float64, replay=False):
    """Builds the drawn layer with random parameters, in the drawn mode.

    One training forward first moves a batch normalization's moving statistics
    away from 0 and 1. A criterion becomes a module whose output is its loss.
    ``replay`` makes a Dropout draw the same mask on every forward, as central
    differences need. Returns the module and its input.
    """
    layer = draw.build(package)
    x = draw.values(draw.shape, seed).astype(dtype)
    if draw.target is not None:
        target = draw.target(draw.shape, seed + 1)
        if np.issubdtype(target.dtype, np.floating):
            target = target.astype(dtype)
        return LossOf(layer, target), x
    randomize_parameters(layer, seed)
    layer.forward((1.0 + 2.0 * normal(draw.shape, seed + 2)).astype(dtype))
    if not draw.training:
        layer.evaluate()
    if replay and hasattr(layer, "generator"):
        layer.generator = ReplayGenerator(seed)
    return layer, x


def output_grad_for(draw, x, seed, dtype=np.float64):
    """A random output_grad shaped like the output a fresh layer gives for ``x``."""
    module, _ = prepare(draw, generated, seed)
    return normal(np.shape(module.forward(x)), seed + 3).astype(dtype)


# Strategies: one per generated layer


def away_from_kinks(shape, seed):
    return 2.0 * away_from_zero(shape, seed)


def well_spread(shape, seed):
    """Distinct values at least 0.3 apart, for the normalizations.

    A spread that is tiny next to the values themselves costs float32 digits in
    proportion: the conditioning of the formula, not a fault of the code.
    """
    return spread_out(shape, seed, gap=0.3)


def batch_and(features):
    return st.tuples(st.integers(1, 5), features)


@st.composite
def batch_normalization(draw):
    alpha = draw(st.floats(0, 1))
    shape = draw(batch_and(SIZES))
    training = draw(st.booleans())
    return Draw(lambda P: P.BatchNormalization(alpha), shape, well_spread, training)


@st.composite
def channelwise_scaling(draw):
    shape = draw(batch_and(SIZES))
    return Draw(lambda P: P.ChannelwiseScaling(shape[1], rng=0), shape)


@st.composite
def dropout(draw):
    p = draw(st.one_of(st.sampled_from([0.0, 1.0]), st.floats(0, 1)))
    shape, training = draw(ANY_SHAPE), draw(st.booleans())
    return Draw(lambda P: P.Dropout(p, rng=0), shape, training=training)


@st.composite
def conv2d(draw, like_reference=False):
    """Any valid Conv2d; ``like_reference`` keeps to what the reference takes."""
    channels = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    if like_reference:
        arguments, smallest = (draw(st.sampled_from([1, 3, 5])),), 1
    else:
        kernel, dilation = draw(st.integers(1, 4)), draw(st.integers(1, 2))
        padding = draw(st.sampled_from(["same", 0, 1, 2]))
        stride = 1 if padding == "same" else draw(st.integers(1, 3))
        arguments = (kernel, stride, padding, dilation, draw(st.booleans()))
        span = dilation * (kernel - 1) + 1
        smallest = 1 if padding == "same" else max(1, span - 2 * padding)
    image = st.integers(smallest, smallest + 3)
    shape = (draw(st.integers(1, 2)), channels[0], draw(image), draw(image))
    return Draw(lambda P: P.Conv2d(*channels, *arguments, rng=0), shape)


@st.composite
def linear(draw):
    n_in, n_out = draw(SIZES), draw(SIZES)
    shape = draw(batch_and(st.just(n_in)))
    return Draw(lambda P: P.Linear(n_in, n_out, rng=0), shape)


def elementwise(make, parameter=None):
    """An activation of any shape, fed values away from its kink at 0."""
    return st.builds(
        lambda value, shape: Draw(lambda P: make(P, value), shape, away_from_kinks),
        st.none() if parameter is None else parameter,
        ANY_SHAPE,
    )


@st.composite
def layer_normalization(draw):
    shape = draw(batch_and(SIZES))
    return Draw(lambda P: P.LayerNormalization(shape[1]), shape, well_spread)


@st.composite
def max_pool2d(draw):
    kernel = draw(st.integers(1, 3))
    stride = draw(st.one_of(st.none(), st.integers(1, 3)))
    image = st.integers(kernel, kernel + 3)
    shape = (draw(st.integers(1, 2)), draw(st.integers(1, 2)), draw(image), draw(image))
    return Draw(lambda P: P.MaxPool2d(kernel, stride), shape, spread_out)


def class_targets(as_indices):
    def target(shape, seed):
        indices = np.random.default_rng(seed).integers(0, shape[1], size=shape[0])
        return indices if as_indices else np.eye(shape[1])[indices]

    return target


@st.composite
def criterion(draw, name):
    if name == "MSECriterion":
        target = normal
    else:
        target = class_targets(draw(st.booleans()))
    return Draw(lambda P: getattr(P, name)(), draw(batch_and(SIZES)), target=target)


STRATEGIES = {
    "BatchNormalization": batch_normalization(),
    "ChannelwiseScaling": channelwise_scaling(),
    "Dropout": dropout(),
    "Conv2d": conv2d(),
    "Linear": linear(),
    "ReLU": elementwise(lambda P, _: P.ReLU()),
    "LeakyReLU": elementwise(lambda P, s: P.LeakyReLU(s), st.floats(-2, 2)),
    "ELU": elementwise(lambda P, a: P.ELU(a), st.floats(0.1, 3)),
    "SoftPlus": elementwise(lambda P, _: P.SoftPlus()),
    "LayerNormalization": layer_normalization(),
    "MSECriterion": criterion("MSECriterion"),
    "ClassNLLCriterion": criterion("ClassNLLCriterion"),
    "Flatten": st.builds(lambda shape: Draw(lambda P: P.Flatten(), shape), ANY_SHAPE),
    "SoftMax": st.builds(lambda s: Draw(lambda P: P.SoftMax(), s), batch_and(SIZES)),
    "LogSoftMax": st.builds(
        lambda s: Draw(lambda P: P.LogSoftMax(), s), batch_and(SIZES)
    ),
    "MaxPool2d": max_pool2d(),
}
LIKE_REFERENCE = {
    "BatchNormalization": batch_normalization(),
    "ChannelwiseScaling": channelwise_scaling(),
    "Dropout": dropout(),
    "Conv2d": conv2d(like_reference=True),
}


def test_every_layer_has_a_strategy():
    assert set(STRATEGIES) == set(generated.__all__)
    assert set(LIKE_REFERENCE) == set(reference.__all__)


# The properties


@pytest.mark.parametrize("name", sorted(LIKE_REFERENCE))
@EXAMPLES
@given(data=st.data())
def test_generated_matches_reference(name, data):
    draw, seed = data.draw(LIKE_REFERENCE[name]), data.draw(SEEDS)
    ours, x = prepare(draw, generated, seed)
    theirs, _ = prepare(draw, reference, seed)
    output_grad = output_grad_for(draw, x, seed)
    assert_runs_agree(
        forward_backward(ours, x, output_grad),
        forward_backward(theirs, x, output_grad),
        rtol=1e-10,
        atol=1e-12,
    )
    for state in ("moving_mean", "moving_variance", "mask"):
        if hasattr(theirs, state):
            np.testing.assert_allclose(
                getattr(ours, state), getattr(theirs, state), rtol=1e-10, atol=1e-12
            )


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@EXAMPLES
@given(data=st.data())
def test_generated_gradients_match_finite_differences(name, data):
    draw, seed = data.draw(STRATEGIES[name]), data.draw(SEEDS)
    module, x = prepare(draw, generated, seed, replay=True)
    report = check_gradients(module, x, rng=seed + 3)
    assert report.passed, str(report)


@pytest.mark.parametrize("name", sorted(STRATEGIES))
@EXAMPLES
@given(data=st.data())
def test_float32_in_gives_float32_out(name, data):
    draw, seed = data.draw(STRATEGIES[name]), data.draw(SEEDS)
    single, x = prepare(draw, generated, seed, np.float32)
    double, _ = prepare(draw, generated, seed)
    output_grad = output_grad_for(draw, x, seed, np.float32)
    result = forward_backward(single, x, output_grad)

    output, input_grad, _ = result
    assert input_grad.dtype == np.float32
    # A criterion's loss is a Python float, whatever the input's dtype.
    assert output.dtype == (np.float64 if draw.target is not None else np.float32)
    want = forward_backward(double, x.astype(np.float64), output_grad.astype(float))
    assert_runs_agree(result, want, rtol=1e-4, atol=1e-4)

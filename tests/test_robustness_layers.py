"""Bad input to every layer, generated and reference, is refused at entry.

A refusal is a ValueError or TypeError whose message starts with the layer's
name and names the argument, never an error from deep inside NumPy or SciPy:
wrong axes, sizes, dtypes and output_grad shapes (size-1 axes included, which
NumPy would broadcast), bad constructor arguments and criterion targets. Known
faults are strict xfail tests whose reason says what happens now.
"""

import functools
import re

import numpy as np
import pytest

from tests.helpers import assert_runs_agree, normal
from tests.layer_cases import CASES, CRITERIA, G, R, each_case, run_case


def assert_refused(call, layer, argument, error=(ValueError, TypeError)):
    """Checks that ``call`` raises ``error`` whose message opens with ``layer``.

    The message must also name ``argument``; returns it.
    """
    with pytest.raises(error) as caught:
        call()
    message = str(caught.value)
    assert message.startswith(layer), message
    assert re.search(rf"\b{re.escape(argument)}\b", message), message
    return message


def test_every_layer_has_a_hostile_case():
    seen = {(c.id.split("-")[0], c.name) for c in CASES}
    assert {("generated", name) for name in set(G.__all__) - CRITERIA} <= seen
    assert {("reference", name) for name in R.__all__} <= seen


# Shapes and dtypes refused at entry


@each_case(lambda case: not case.any_rank)
@pytest.mark.parametrize("change", ["one more axis", "one axis fewer", "scalar"])
def test_wrong_number_of_axes_is_refused(case, change):
    x = normal(case.shape)
    bad = {"one more axis": x[..., None], "one axis fewer": x[0], "scalar": x.flat[0]}
    assert_refused(lambda: case.build().forward(bad[change]), case.name, "input")


@each_case(lambda case: case.any_rank)
def test_any_rank_layers_refuse_a_scalar(case):
    assert_refused(lambda: case.build().forward(np.float64(1.0)), case.name, "input")


@pytest.mark.parametrize(
    ("case", "axis"),
    [pytest.param(c, axis, id=f"{c.id}-axis{axis}") for c in CASES for axis in c.fixed],
)
def test_a_size_the_parameters_fix_is_refused(case, axis):
    layer = case.build()
    layer.forward(normal(case.shape))
    shape = list(case.shape)
    shape[axis] += 1
    bad = normal(shape)
    assert_refused(lambda: layer.forward(bad), case.name, "input")
    assert_refused(lambda: layer.backward(bad, bad), case.name, "input")


@pytest.mark.parametrize(
    ("case", "axis"),
    [
        pytest.param(c, a, id=f"{c.id}-axis{a}")
        for c in CASES
        for a in range(len(c.shape))
    ],
)
def test_an_empty_axis_is_refused(case, axis):
    shape = list(case.shape)
    shape[axis] = 0
    message = assert_refused(
        lambda: case.build().forward(np.ones(shape)), case.name, "input"
    )
    assert "empty" in message


NOT_FLOAT = {
    "int64": lambda shape: np.ones(shape, dtype=np.int64),
    "uint8": lambda shape: np.ones(shape, dtype=np.uint8),
    "bool": lambda shape: np.ones(shape, dtype=bool),
    "complex": lambda shape: np.ones(shape, dtype=complex),
    "object": lambda shape: np.full(shape, None),
    "str": lambda shape: np.full(shape, "1.0"),
}


@each_case()
@pytest.mark.parametrize("kind", NOT_FLOAT)
def test_input_that_is_not_floating_point_is_refused(case, kind):
    bad = NOT_FLOAT[kind](case.shape)
    message = assert_refused(
        lambda: case.build().forward(bad), case.name, "input", TypeError
    )
    assert str(bad.dtype) in message
    layer = case.build()
    x = normal(case.shape)
    output_grad = NOT_FLOAT[kind](layer.forward(x).shape)
    assert_refused(lambda: layer.backward(x, output_grad), case.name, "output_grad")


def wrong_shapes(shape):
    """Shapes that differ from ``shape`` in one place, size-1 axes included."""
    shapes = [shape + (1,), shape[1:]]
    for axis, size in enumerate(shape):
        for other in (size + 1, 1 if size > 1 else 3):
            shapes.append(shape[:axis] + (other,) + shape[axis + 1 :])
    return shapes


@each_case()
def test_output_grad_of_another_shape_is_refused(case):
    layer = case.build()
    x = normal(case.shape)
    output_shape = layer.forward(x).shape
    for shape in wrong_shapes(output_shape):
        message = assert_refused(
            lambda shape=shape: layer.backward(x, np.ones(shape)),
            case.name,
            "output_grad",
        )
        assert "(" + ", ".join(map(str, shape)) in message


@each_case()
def test_lists_give_what_arrays_give(case):
    x = normal(case.shape)
    output_grad = normal(case.build().forward(x).shape, seed=1)
    as_lists = run_case(case, x.tolist(), output_grad.tolist())
    assert_runs_agree(as_lists, run_case(case, x, output_grad), rtol=0, atol=0)


@pytest.mark.parametrize("layer", [G.ChannelwiseScaling(2, rng=0), R.Dropout(0.5)])
def test_a_ragged_list_is_refused_naming_the_layer(layer):
    assert_refused(
        lambda: layer.forward([[1.0, 2.0], [3.0]]), type(layer).__name__, "input"
    )


KERNEL_LARGER_THAN_INPUT = [
    pytest.param(lambda: G.Conv2d(1, 1, 5, padding=0), (1, 1, 3, 3), id="conv_k5_p0"),
    pytest.param(lambda: G.Conv2d(1, 1, 5, padding=1), (1, 1, 2, 2), id="conv_k5_p1"),
    pytest.param(
        lambda: G.Conv2d(1, 1, 3, padding=0, dilation=3), (1, 1, 5, 5), id="conv_d3"
    ),
    pytest.param(lambda: G.Conv2d(1, 1, 3, 2, 0), (1, 1, 2, 7), id="conv_s2_short"),
    pytest.param(lambda: G.MaxPool2d(3), (1, 1, 2, 5), id="pool_k3"),
    pytest.param(lambda: G.MaxPool2d(2, stride=3), (1, 1, 1, 4), id="pool_k2_s3"),
]


@pytest.mark.parametrize(("build", "shape"), KERNEL_LARGER_THAN_INPUT)
def test_a_kernel_larger_than_the_padded_input_is_refused(build, shape):
    layer = build()
    message = assert_refused(
        lambda: layer.forward(np.ones(shape)), type(layer).__name__, "input"
    )
    assert str(shape) in message


@pytest.mark.parametrize(("build", "shape"), KERNEL_LARGER_THAN_INPUT)
def test_backward_names_the_input_a_kernel_does_not_fit(build, shape):
    layer = build()
    call = functools.partial(layer.backward, np.ones(shape), np.ones((1, 1, 1, 1)))
    message = assert_refused(call, type(layer).__name__, "input")
    assert str(shape) in message


@each_case(lambda case: case.name != "Dropout")
@pytest.mark.parametrize("training", [True, False], ids=["train", "evaluate"])
def test_backward_before_any_forward_needs_no_forward(case, training):
    """Every layer but Dropout recomputes what backward needs from the input.

    Dropout in training refuses (with a ValueError, tested with the generated
    layers): its mask only exists after a forward.
    """
    x = normal(case.shape)
    output_grad = normal(case.build().forward(x).shape, seed=1)
    layer = case.build()
    if not training:
        layer.evaluate()
    input_grad = layer.backward(x, output_grad)
    _, want, _ = run_case(case, x, output_grad, training)
    np.testing.assert_array_equal(input_grad, want)


# Constructor arguments

SIZES = (0, -1, 2.5, 2.0, True, "3", None)
PROBABILITIES = (-0.1, 1.5, float("nan"), float("inf"), True, "0.5", None)
SEEDS = (-1, 1.5, True, "0", [0])
CONV = {"in_channels": 2, "out_channels": 3, "kernel_size": 3}


def bad_arguments(layer_class, valid, values_by_argument, xfail=None):
    """One param per bad value: the layer built from ``valid`` with that value."""
    package = layer_class.__module__.split(".")[1]
    marks = [pytest.mark.xfail(strict=True, reason=xfail)] if xfail else []
    return [
        pytest.param(
            functools.partial(layer_class, **{**valid, argument: value}),
            layer_class.__name__,
            argument,
            id=f"{package}-{layer_class.__name__}-{argument}={value!r}",
            marks=marks,
        )
        for argument, values in values_by_argument.items()
        for value in values
    ]


BAD_ARGUMENTS = [
    *(
        row
        for P in (G, R)
        for row in [
            *bad_arguments(P.ChannelwiseScaling, {"n_out": 3}, {"n_out": SIZES}),
            *bad_arguments(P.ChannelwiseScaling, {"n_out": 3}, {"rng": SEEDS}),
            *bad_arguments(P.BatchNormalization, {}, {"alpha": PROBABILITIES}),
            *bad_arguments(P.Dropout, {}, {"p": PROBABILITIES, "rng": SEEDS}),
            *bad_arguments(
                P.Conv2d,
                CONV,
                {name: SIZES for name in CONV} | {"rng": SEEDS},
            ),
        ]
    ),
    *bad_arguments(R.Conv2d, CONV, {"kernel_size": (2, 4)}),
    *bad_arguments(
        G.Conv2d,
        CONV,
        {
            "stride": SIZES,
            "dilation": SIZES,
            "padding": (-1, 1.5, "valid", None, True, [1]),
            "bias": (1, None, "yes"),
        },
    ),
    *bad_arguments(G.Conv2d, {**CONV, "stride": 2}, {"padding": ("same",)}),
    *bad_arguments(
        G.Linear, {"n_in": 3, "n_out": 2}, {"n_in": SIZES, "n_out": SIZES, "rng": SEEDS}
    ),
    *bad_arguments(G.LayerNormalization, {"n_features": 3}, {"n_features": SIZES}),
    *bad_arguments(
        G.MaxPool2d, {"kernel_size": 2}, {"kernel_size": SIZES, "stride": SIZES[:-1]}
    ),
    *bad_arguments(
        G.Conv2d,
        CONV,
        {"padding": (np.array([1, 2]),)},
    ),
    *bad_arguments(G.LeakyReLU, {}, {"slope": (None, "0.1", [0.1, 0.2])}),
    *bad_arguments(G.ELU, {}, {"alpha": (None, "0.1", [0.1, 0.2])}),
]


@pytest.mark.parametrize(("build", "layer", "argument"), BAD_ARGUMENTS)
def test_bad_constructor_arguments_are_refused(build, layer, argument):
    assert_refused(build, layer, argument)


# Criteria

LOGITS = normal((4, 3))


def misuse(criterion, input, target, argument, id):
    return pytest.param(criterion, input, target, argument, id=id)


MSE, NLL = G.MSECriterion, G.ClassNLLCriterion
CRITERION_MISUSE = [
    *(
        misuse(MSE, LOGITS, np.zeros(shape), "target", f"mse-target{shape}")
        for shape in [(4, 1), (1, 3), (4,), (3, 4), (4, 3, 1), ()]
    ),
    misuse(MSE, LOGITS[:1], np.zeros((4, 3)), "target", "mse-batch_of_one_input"),
    misuse(MSE, LOGITS, np.zeros((4, 3), dtype=int), "target", "mse-int_target"),
    misuse(MSE, LOGITS.astype(int), LOGITS, "input", "mse-int_input"),
    misuse(MSE, LOGITS[0], LOGITS[0], "input", "mse-1d_input"),
    misuse(MSE, LOGITS[:0], LOGITS[:0], "input", "mse-empty_batch"),
    misuse(NLL, LOGITS, [0, 1, 3, 0], "target", "nll-index_too_large"),
    misuse(NLL, LOGITS, [0, -1, 2, 0], "target", "nll-negative_index"),
    misuse(NLL, LOGITS, [0, 1, 2, 2**40], "target", "nll-huge_index"),
    misuse(NLL, LOGITS, [0], "target", "nll-indices_of_batch_1"),
    misuse(NLL, LOGITS, [0, 1, 2, 0, 1], "target", "nll-indices_of_batch_5"),
    misuse(NLL, LOGITS, [0.0, 1.0, 2.0, 0.0], "target", "nll-float_indices"),
    misuse(NLL, LOGITS, [[0], [1], [2], [0]], "target", "nll-indices_4x1"),
    misuse(NLL, LOGITS, [True, False, True, False], "target", "nll-bool_indices"),
    misuse(NLL, LOGITS, np.ones((4, 1)), "target", "nll-one_hot_4x1"),
    misuse(
        NLL, LOGITS, np.eye(3, dtype=int)[[0, 1, 2, 0]], "target", "nll-int_one_hot"
    ),
    misuse(NLL, LOGITS.astype(int), [0, 1, 2, 0], "input", "nll-int_input"),
    misuse(NLL, LOGITS[..., None], [0, 1, 2, 0], "input", "nll-3d_input"),
    misuse(NLL, LOGITS[:0], np.zeros(0, dtype=int), "input", "nll-empty_batch"),
]


@pytest.mark.parametrize(("criterion", "input", "target", "argument"), CRITERION_MISUSE)
@pytest.mark.parametrize("method", ["forward", "backward"])
def test_criteria_refuse_bad_input_and_target(
    criterion, input, target, argument, method
):
    call = functools.partial(getattr(criterion(), method), input, target)
    assert_refused(call, criterion.__name__, argument)

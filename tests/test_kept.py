"""Definitions a forward pass keeps for the backward pass on the same input.

Batch normalization keeps its shift, mean and variance: a backward pass on the
input object the last training forward saw reads them, any other input gets
them computed again, and either way the gradient is the same.
"""

import numpy as np
import pytest
import sympy as sp

from codegen.load import layer_class
from derivations import Model, ModelError
from layers.generated import BatchNormalization


def _batch(seed, shape=(16, 5)):
    rng = np.random.default_rng(seed)
    return rng.normal(2.0, 3.0, size=shape), rng.normal(size=shape)


def _recomputing(layer):
    """Makes computing the kept definitions again fail, to show it is skipped."""

    def refuse(x):
        raise AssertionError("the kept definitions were computed again")

    layer._compute_kept_train = refuse


def _assert_reads_what_forward_kept(make, x, output_grad, training=True):
    """Backward on forward's input computes nothing again, and gives the bits
    that a copy of the input, whose kept values are computed again, gives."""
    layer, fresh = make(), make()
    if not training:
        layer.evaluate()
        fresh.evaluate()
    layer.forward(x)
    _recomputing(layer)
    reused = layer.backward(x, output_grad)
    fresh.forward(x.copy())
    np.testing.assert_array_equal(fresh.backward(x.copy(), output_grad), reused)


def test_backward_on_the_forward_input_reads_what_forward_kept():
    _assert_reads_what_forward_kept(BatchNormalization, *_batch(0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_backward_on_another_input_computes_them_again(dtype):
    x, output_grad = _batch(1)
    other, _ = _batch(2)
    x, other, output_grad = (a.astype(dtype) for a in (x, other, output_grad))
    layer = BatchNormalization()
    layer.forward(x)
    got = layer.backward(other, output_grad)
    oracle = BatchNormalization()
    oracle.forward(other)
    np.testing.assert_array_equal(got, oracle.backward(other, output_grad))
    assert not np.allclose(got, layer.backward(x, output_grad))


def test_a_view_of_the_forward_input_is_another_input():
    x, output_grad = _batch(3)
    layer = BatchNormalization()
    layer.forward(x)
    calls = []
    compute = layer._compute_kept_train
    layer._compute_kept_train = lambda array: calls.append(1) or compute(array)
    layer.backward(x[:], output_grad)
    layer.backward(x.astype(np.float32), output_grad.astype(np.float32))
    assert len(calls) == 2


def test_backward_without_a_forward_computes_them():
    x, output_grad = _batch(4)
    layer = BatchNormalization()
    oracle = BatchNormalization()
    oracle.forward(x)
    np.testing.assert_array_equal(
        layer.backward(x, output_grad), oracle.backward(x, output_grad)
    )


def test_only_definitions_of_the_mode_are_kept():
    model = Model("Kept", "a test model", source="tests/test_kept.py")
    B = model.size("B", example=4)
    b = model.index("b", B)
    x = model.input("x", (b,), layout=("batch",))
    with model.mode("train"):
        model.define("y", (b,), 2 * x[b])
        with pytest.raises(ModelError, match="keep_for_backward expects definitions"):
            model.keep_for_backward(x)


def test_max_pool_keeps_where_each_maximum_was():
    from layers.generated import MaxPool2d

    rng = np.random.default_rng(7)
    x, other = rng.normal(size=(2, 3, 6, 6)), rng.normal(size=(2, 3, 6, 6))
    output_grad = rng.normal(size=(2, 3, 3, 3))
    _assert_reads_what_forward_kept(lambda: MaxPool2d(2), x, output_grad)
    # Another input: its maxima are found again, not taken from x's.
    layer = MaxPool2d(2)
    layer.forward(x)
    oracle = MaxPool2d(2)
    oracle.forward(other)
    np.testing.assert_array_equal(
        layer.backward(other, output_grad), oracle.backward(other, output_grad)
    )


@pytest.mark.parametrize("training", [True, False], ids=["train", "evaluate"])
def test_layer_normalization_keeps_each_samples_statistics(training):
    from layers.generated import LayerNormalization

    x, output_grad = _batch(8, shape=(6, 5))
    _assert_reads_what_forward_kept(
        lambda: LayerNormalization(5), x, output_grad, training
    )


def test_a_setting_changed_after_forward_makes_the_kept_values_stale():
    from layers.generated import MaxPool2d

    rng = np.random.default_rng(9)
    x = rng.normal(size=(2, 3, 5, 5))
    output_grad = rng.normal(size=(2, 3, 2, 2))
    layer = MaxPool2d(2, 2)
    layer.forward(x)
    # Stride 3 gives the same output shape, other windows.
    layer.stride = 3
    oracle = MaxPool2d(2, 3)
    oracle.forward(x)
    np.testing.assert_array_equal(
        layer.backward(x, output_grad), oracle.backward(x, output_grad)
    )


def test_a_definition_that_reads_a_parameter_is_not_kept():
    model = Model("KeepsScaled", "a test model", source="tests/test_kept.py")
    B, N = model.size("B", example=4), model.size("N", example=3, bound_to="n")
    model.argument("n")
    b, n = model.index("b", B), model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "n"))
    gamma = model.parameter("gamma", (n,), "gamma", "gradGamma", init="ones")
    with model.mode("train"):
        scaled = model.define("scaled", (b, n), x[b, n] * gamma[n])
        total = model.define("total", (n,), sp.Sum(scaled[b, n], (b, 0, B - 1)))
        model.define("y", (b, n), scaled[b, n] * total[n])
        with pytest.raises(ModelError, match="'total' reads parameter 'gamma'"):
            model.keep_for_backward(total)


def test_a_state_never_shares_memory_with_a_kept_value():
    model = Model("KeepsSum", "a test model", source="tests/test_kept.py")
    B, N = model.size("B", example=4), model.size("N", example=3)
    b, n = model.index("b", B), model.index("n", N)
    b2 = model.index("b2", B)
    x = model.input("x", (b, n), layout=("batch", "N"))
    total = model.state("total", (n,), init="zeros")
    with model.mode("train"):
        s = model.define("s", (n,), sp.Sum(x[b, n], (b, 0, B - 1)))
        model.define("y", (b, n), x[b, n] * s[n])
        model.keep_for_backward(s)
        model.update(total, (n,), sp.Sum(x[b2, n], (b2, 0, B - 1)))
    layer = layer_class(model)()
    x_value, output_grad = _batch(10, shape=(4, 3))
    layer.forward(x_value)
    assert not np.shares_memory(layer.total, layer._kept_train[-1])
    layer.total *= 0.5
    np.testing.assert_array_equal(
        layer.backward(x_value, output_grad),
        layer.backward(x_value.copy(), output_grad),
    )

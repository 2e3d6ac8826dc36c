"""Generated code never confuses a user's names with its own."""

import numpy as np
import pytest
import sympy as sp

from codegen.load import layer_class
from codegen.names import Letters
from derivations import Model
from layers.gradcheck import check_gradients


def clashing_model():
    """Tensors called np, input, out, t, x and dtype: names the code uses."""
    model = Model("Clash", "Names that clash.", source="tests/test_names.py")
    B = model.size("B", example=4)
    N = model.size("N", example=3, bound_to="n")
    model.argument("n")
    b, n = model.index("b", B), model.index("n", N)
    data = model.input("input", (b, n), layout=("batch", "n"))
    np_ = model.parameter("np", (n,), "np_weight", "grad_np")
    out = model.parameter("out", (n,), "out", "grad_out")
    x = model.parameter("x", (n,), "x", "grad_x")
    dtype = model.parameter("dtype", (n,), "dtype_", "grad_dtype")
    with model.mode("train"):
        t = model.define("t", (b, n), data[b, n] * np_[n] + out[n])
        total = sp.Sum(data[b, n], (n, 0, N - 1))
        model.define("y", (b, n), t[b, n] * x[n] + dtype[n] * total)
    return model


def test_tensors_named_like_the_generated_code_still_work():
    layer = layer_class(clashing_model())(3, rng=0)
    data = np.random.default_rng(0).normal(size=(4, 3))
    report = check_gradients(layer, data)
    assert report.passed, report
    expected = (data * layer.np_weight + layer.out) * layer.x
    expected += layer.dtype_ * data.sum(axis=1, keepdims=True)
    np.testing.assert_allclose(layer.forward(data), expected, rtol=1e-12)


def test_more_indices_than_einsum_letters_are_refused_clearly():
    size = sp.Symbol("N", integer=True, positive=True)
    letters = Letters([sp.Idx(f"i{k}", size) for k in range(52)])
    assert len(set(letters.letters.values())) == 52
    with pytest.raises(NotImplementedError, match="52 letters"):
        letters.letter(sp.Idx("one_too_many", size))

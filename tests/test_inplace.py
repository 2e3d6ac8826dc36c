"""In-place statements: taken only into a dead array the pass made itself.

A wrong rewrite shows as a changed input or output_grad, a result that differs
from the reference layers or from central differences, or an in-place
statement taken where a later statement still reads the array.
"""

import numpy as np
import pytest
import sympy as sp

from codegen.emit_module import emit_module
from codegen.inplace import InPlace, resolve
from codegen.load import layer_class
from derivations import Model
from layers import generated, reference
from layers.gradcheck import check_gradients


def _model(define, name):
    """A (batch, N) model whose train mode ``define(model, x, b, n)`` fills."""
    model = Model(name, "a test model", source="tests/test_inplace.py")
    # Example sizes large enough that the lowerer proposes in-place statements.
    B, N = model.size("B", example=256), model.size("N", example=256)
    b, n = model.index("b", B), model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "N"))
    with model.mode("train"):
        define(model, x, b, n)
    return model


def _dead_after(model, x, b, n):
    u = model.define("u", (b, n), sp.exp(x[b, n]))
    model.define("y", (b, n), 3 * u[b, n] + x[b, n])


def _read_after(model, x, b, n):
    u = model.define("u", (b, n), sp.exp(x[b, n]))
    v = model.define("v", (b, n), 2 * u[b, n] + x[b, n])
    model.define("y", (b, n), v[b, n] * u[b, n])


def _run(layer, x, output_grad):
    y = layer.forward(x)
    return y, layer.backward(x, output_grad)


def _layer_normalization(layer, x, output_grad):
    """Output and input gradient of a layer normalization, written out."""
    mean = x.mean(axis=1, keepdims=True)
    sigma = np.sqrt(x.var(axis=1, keepdims=True) + layer.EPS)
    normalized = (x - mean) / sigma
    g = output_grad * layer.gamma
    input_grad = (
        g
        - g.mean(axis=1, keepdims=True)
        - normalized * (g * normalized).mean(axis=1, keepdims=True)
    ) / sigma
    return normalized * layer.gamma + layer.beta, input_grad


def _softplus(layer, x, output_grad):
    return np.logaddexp(0, x), output_grad / (1 + np.exp(-x))


def _batch_normalization(layer, x, output_grad):
    oracle = reference.BatchNormalization()
    return oracle.forward(x), oracle.backward(x, output_grad)


@pytest.mark.parametrize("shape", [(3, 4), (70, 1000)], ids=["one block", "blocks"])
@pytest.mark.parametrize(
    ("name", "oracle"),
    [
        ("BatchNormalization", _batch_normalization),
        ("LayerNormalization", _layer_normalization),
        ("SoftPlus", _softplus),
    ],
)
def test_generated_layers_leave_the_callers_arrays_alone(name, oracle, shape):
    """Blocks of rows, a ragged last one included, give the whole-array result."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, size=shape)
    output_grad = rng.normal(size=shape)
    kept_x, kept_grad = x.copy(), output_grad.copy()
    arguments = (shape[1],) if name == "LayerNormalization" else ()
    layer = getattr(generated, name)(*arguments)
    for parameter in layer.get_parameters():
        parameter[:] = rng.normal(size=parameter.shape)
    kept_parameters = [p.copy() for p in layer.get_parameters()]
    y, input_grad = _run(layer, x, output_grad)
    np.testing.assert_array_equal(x, kept_x)
    np.testing.assert_array_equal(output_grad, kept_grad)
    for now, before in zip(layer.get_parameters(), kept_parameters, strict=True):
        np.testing.assert_array_equal(now, before)
    y_oracle, input_grad_oracle = oracle(layer, x, output_grad)
    np.testing.assert_allclose(y, y_oracle, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(input_grad, input_grad_oracle, rtol=1e-7, atol=1e-10)


@pytest.mark.parametrize("name", ["BatchNormalization", "SoftPlus"])
def test_generated_layers_match_central_differences(name):
    x = np.random.default_rng(1).normal(size=(6, 5))
    assert check_gradients(getattr(generated, name)(), x, rng=2).passed


def test_a_dead_intermediate_takes_the_result_and_a_live_one_does_not():
    dead = _model(_dead_after, "DeadAfter")
    live = _model(_read_after, "ReadAfter")
    assert "# In place: u is not read" in emit_module(dead, "dead").text
    text = emit_module(live, "live").text
    forward = text[text.index("def _forward_train") : text.index("def _backward")]
    # y = v * u still reads u, so v gets an array of its own; y may take u.
    assert "        v = 2*u + x\n" in forward
    rng = np.random.default_rng(3)
    x = rng.normal(size=(7, 5))
    kept = x.copy()
    np.testing.assert_allclose(layer_class(dead)().forward(x), 3 * np.exp(x) + x)
    np.testing.assert_allclose(
        layer_class(live)().forward(x), (2 * np.exp(x) + x) * np.exp(x)
    )
    np.testing.assert_array_equal(x, kept)
    for model in (dead, live):
        assert check_gradients(layer_class(model)(), x, rng=4).passed


def _statement():
    return InPlace("e = d*2", "e", [("d", ["d *= 2", "e = d"])])


def test_resolve_takes_a_donor_nothing_reads_later():
    lines = ["d = x + 1", _statement(), "return e"]
    assert resolve(lines, {"d": (), "e": ()})[2:] == ["d *= 2", "e = d", "return e"]


def test_resolve_keeps_a_donor_read_later():
    lines = ["d = x + 1", _statement(), "f = d + e", "return f"]
    assert resolve(lines, {"d": (), "e": (), "f": ()})[1] == "e = d*2"


def test_resolve_keeps_a_donor_whose_view_is_read_later():
    lines = ["d = x + 1", "a = d[0]", _statement(), "return e, a"]
    assert resolve(lines, {"d": (), "e": ()})[2] == "e = d*2"


def test_resolve_keeps_a_donor_whose_view_the_statement_reads():
    statement = InPlace("e = d*2 + a", "e", [("d", ["d *= 2", "d += a", "e = d"])])
    lines = ["d = x + 1", "a = d[0]", statement, "return e"]
    assert resolve(lines, {"d": (), "e": ()})[2] == "e = d*2 + a"


def _from_input(model, x, b, n):
    model.define("y", (b, n), 3 * x[b, n] + 1)


def test_the_callers_arrays_are_never_offered():
    """x and output_grad are read once and dead after, but not the pass's own."""
    text = emit_module(_model(_from_input, "FromInput"), "from_input").text
    assert "In place" not in text


def _abs_centred(model, x, b, n):
    B = b.upper + 1
    mean = model.define("mean", (n,), sp.Sum(x[b, n], (b, 0, B - 1)) / B)
    model.define("y", (b, n), sp.Abs(x[b, n] - mean[n]) ** 3)


def _real_part(model, x, b, n):
    model.define("y", (b, n), 2 * sp.re(x[b, n]) + x[b, n] ** 2)


@pytest.mark.parametrize(
    ("define", "expected"),
    [
        (_abs_centred, lambda x: np.abs(x - x.mean(0)) ** 3),
        (_real_part, lambda x: 2 * x + x**2),
    ],
    ids=["abs", "re"],
)
def test_a_function_that_returns_its_argument_is_never_a_donor(define, expected):
    """np.real of a real array is the array itself: writing into it would write
    into the caller's input. Abs once brought re() into derivatives too."""
    model = _model(define, f"Returns{define.__name__.title().replace('_', '')}")
    rng = np.random.default_rng(5)
    x = rng.normal(size=(6, 4))
    x.setflags(write=False)
    output_grad = rng.standard_normal(x.shape)
    layer = layer_class(model)()
    np.testing.assert_allclose(layer.forward(x), expected(x))
    layer.backward(x, output_grad)
    assert check_gradients(layer_class(model)(), x.copy(), rng=6).passed
    assert "re(" not in str(emit_module(model, "m").text.split("def _backward")[1])

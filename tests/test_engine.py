"""The index calculus: delta elimination, SymPy's pitfalls, unsupported constructs."""

import re

import pytest
import sympy as sp

from codegen.emit_module import emit_module
from derivations import Model, ModelError, derive_backward
from derivations.affine import InRange
from derivations.calculus import FreshIndices, Term, eliminate_deltas
from derivations.instantiate import Instance, expand_sums
from derivations.models import build
from derivations.notation import size_symbol


def _index(name, size):
    return sp.Idx(name, size)


def test_sympy_delta_summation_leaves_piecewise_but_ours_does_not():
    """SymPy's own rule answers with a Piecewise over symbolic bounds."""
    B = size_symbol("B")
    i, j = _index("i", B), _index("j", B)
    f = sp.IndexedBase("f", shape=(B,))
    sympy_answer = sp.Sum(sp.KroneckerDelta(i, j) * f[i], (i, 0, B - 1)).doit()
    assert sympy_answer.has(sp.Piecewise)

    ours = eliminate_deltas(Term((i,), sp.KroneckerDelta(i, j) * f[i]))
    assert ours == Term((), f[j])


def test_affine_delta_becomes_a_zero_padded_shifted_read():
    """sum_h g[h] delta(k, h + t - P) = g[k - t + P], zero outside 0..H-1."""
    H, T = size_symbol("H"), size_symbol("T")
    P = sp.Symbol("P", integer=True, nonnegative=True)
    h, k, t = _index("h", H), _index("k", H), _index("t", T)
    g = sp.IndexedBase("g", shape=(H,))
    term = eliminate_deltas(
        Term((h, t), g[h] * sp.KroneckerDelta(k, h + t - P)), prefer=(h,)
    )
    assert term.summed == (t,)
    assert term.factor == g[k - t + P]
    assert not term.factor.has(InRange), "the padded read absorbs the range bracket"

    # The same sum at concrete sizes, by explicit expansion.
    sizes = {H: 5, T: 3, P: 1}
    values = sp.symbols("g0:5")
    for k_value in range(5):
        explicit = sum(
            values[h_value]
            for h_value in range(5)
            for t_value in range(3)
            if k_value == h_value + t_value - 1
        )
        derived = expand_sums(
            sp.Sum(term.factor, (t, 0, T - 1)).xreplace({k: k_value}).xreplace(sizes)
        )
        derived = derived.replace(
            lambda e: isinstance(e, sp.Indexed),
            lambda e: values[int(e.indices[0])] if 0 <= e.indices[0] < 5 else 0,
        )
        assert sp.expand(derived - explicit) == 0


def test_a_bracket_with_no_read_to_absorb_it_stays():
    H = size_symbol("H")
    K = size_symbol("K")
    h, k, t = _index("h", H), _index("k", H), _index("t", K)
    term = eliminate_deltas(Term((h,), sp.KroneckerDelta(k, h + t)))
    assert term.summed == ()
    assert term.factor.has(InRange)


def test_division_by_a_size_leaves_the_sum():
    B, N = size_symbol("B"), size_symbol("N")
    b, n = _index("b", B), _index("n", N)
    x = sp.IndexedBase("x", shape=(B, N))
    term = eliminate_deltas(Term((b,), x[b, n] / B))
    assert term.to_expr() == sp.Sum(x[b, n], (b, 0, B - 1)) / B


def test_batch_norm_backward_has_no_batch_by_batch_work():
    """No term of the derived backward pass ranges over two batch indices."""
    model = build("batch_normalization")
    backward = derive_backward(model, "train")
    B = model.sizes[0]
    for adjoint in backward.adjoints:
        for term in adjoint.terms:
            batch = {i for i in term.factor.atoms(sp.Idx) if i.upper == B - 1}
            assert len(batch) <= 1, (adjoint.name, term)
    source = emit_module(model, "batch_normalization").text
    assert "np.eye" not in source


def _model_with(expression_of, name="Broken"):
    """A one-definition model whose expression ``expression_of(x, b, n, B, N)``."""
    model = Model(name, "a test model", source="tests/test_engine.py")
    B, N = model.size("B", example=4), model.size("N", example=3)
    b, n = model.index("b", B), model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "N"))
    with model.mode("train"):
        model.define("y", (b, n), expression_of(x, b, n, B, N))
    return model


UNSUPPORTED = [
    ("Product", lambda x, b, n, B, N: sp.Product(x[b, n], (b, 0, B - 1)), "Product"),
    (
        "partial sum",
        lambda x, b, n, B, N: sp.Sum(x[b, n], (b, 1, B - 1)),
        "bounds",
    ),
    ("non-affine index", lambda x, b, n, B, N: x[b * b, n], "not affine"),
    ("negative stride", lambda x, b, n, B, N: x[B - 1 - 2 * b, n], "negative"),
    (
        "a read the backward reverses with a stride",
        lambda x, b, n, B, N: x[b, n + b + b],
        "negative coefficient",
    ),
]


@pytest.mark.parametrize(
    ("expression_of", "words"),
    [case[1:] for case in UNSUPPORTED],
    ids=[case[0] for case in UNSUPPORTED],
)
def test_unsupported_constructs_raise_not_implemented_naming_them(expression_of, words):
    model = _model_with(expression_of)
    with pytest.raises(NotImplementedError, match=words) as raised:
        emit_module(model, "broken")
    # The message points at the formula: the definition and its model.
    assert "'y'" in str(raised.value) or "'x'" in str(raised.value)
    assert "model Broken" in str(raised.value)


def test_a_free_index_missing_from_the_left_hand_side_is_a_model_error():
    model = Model("Broken", "a test model", source="tests/test_engine.py")
    B, N = model.size("B", example=4), model.size("N", example=3)
    b, n = model.index("b", B), model.index("n", N)
    x = model.input("x", (b, n), layout=("batch", "N"))
    with model.mode("train"):
        model.define("y", (b,), x[b, n])
    with pytest.raises(ModelError, match="'y'.*n"):
        derive_backward(model, "train")


def test_instance_reads_outside_the_range_as_zero():
    model = build("conv2d")
    values = {"B": 1, "C": 1, "O": 1, "H": 2, "W": 2, "K": 3, "S": 1, "D": 1, "P": 1}
    values.update(Ho=2, Wo=2)
    sizes = {s: values[s.name] for s in model.sizes}
    instance = Instance(model, "train", sizes)
    assert instance.read("x", (0, 0, -1, 0)) == 0
    assert instance.read("x", (0, 0, 1, 1)) == sp.Symbol("x_0_0_1_1", real=True)


def test_fresh_indices_never_reuse_a_name():
    fresh = FreshIndices()
    b = sp.Idx("b", size_symbol("B"))
    first, second = fresh.like(b), fresh.like(b)
    assert len({b, first, second}) == 3
    assert (first.lower, first.upper) == (b.lower, b.upper)


def test_latex_of_a_jacobian_writes_deltas_and_adjoint_bars():
    from derivations import derive_jacobian
    from derivations.latex import to_latex

    model = build("batch_normalization")
    jacobian = to_latex(derive_jacobian(model, "train", "x").expression, model)
    assert r"\delta_{b b'}" in jacobian and r"\delta_{n n'}" in jacobian
    adjoints = {a.name: a for a in derive_backward(model, "train").adjoints}
    vjp = to_latex(adjoints["grad_xs"].expression, model)
    assert r"\overline{y}_{b,n}" in vjp and r"\overline{\mathrm{var}}_{n}" in vjp


@pytest.mark.parametrize("name", ["abs", "np", "Module", "class", "2fast", "my layer"])
def test_a_model_name_the_generated_module_cannot_hold_is_refused(name):
    with pytest.raises(ModelError, match=rf"name .*; got {re.escape(repr(name))}"):
        Model(name, "a test model", source="tests/test_engine.py")

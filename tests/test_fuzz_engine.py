"""The engine fuzzed: random forward formulas, derived, generated and checked.

Hypothesis draws a formula from a small grammar (sums over indices, products,
shifted reads with zero padding, elementwise and piecewise functions,
divisions, powers), the engine derives it, the code generator emits a layer,
and the layer's gradients must match central finite differences at random small
sizes. A failure shrinks to a minimal formula; each kind of fault found became
a regression test below.
"""

import os

import numpy as np
import pytest
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from codegen.load import layer_class
from derivations import Model
from layers.gradcheck import check_gradients


class Vocabulary:
    """What a drawn formula may read: the model's tensors and indices."""

    def __init__(self, model):
        self.B = model.size("B", example=4)
        self.N = model.size("N", example=3, bound_to="n")
        model.argument("n")
        self.b = model.index("b", self.B)
        self.n = model.index("n", self.N)
        self.m = model.index("m", self.N)
        self.x = model.input("x", (self.b, self.n), layout=("batch", "n"))
        self.w = model.parameter("w", (self.n,), "w", "grad_w")
        self.slope = model.constant("slope", 0.25)


def leaves(v):
    return st.sampled_from(
        [
            lambda: v.x[v.b, v.n],
            lambda: v.w[v.n],
            lambda: v.x[v.b, v.n + 1],  # a shifted read: zero past the end
            lambda: v.x[v.b, v.n - 1],
            lambda: sp.Sum(v.x[v.b, v.m] * v.w[v.m], (v.m, 0, v.N - 1)) / v.N,
            lambda: sp.Sum(v.x[v.b, v.m] ** 2, (v.m, 0, v.N - 1)),
            lambda: sp.Integer(2),
            lambda: v.slope,
        ]
    )


UNARY = [
    ("square", lambda e: e**2),
    ("cube", lambda e: e**3),
    ("tanh", sp.tanh),
    ("sin", sp.sin),
    ("gauss", lambda e: sp.exp(-(e**2))),
    ("safe division", lambda e: 1 / (1 + e**2)),
    ("softplus", lambda e: sp.log(1 + sp.exp(sp.tanh(e)))),
    ("leaky", lambda e: sp.Piecewise((e, e > 0), (e / 4, True))),
    ("sqrt", lambda e: sp.sqrt(1 + e**2)),
]
BINARY = [
    ("add", lambda a, b: a + b),
    ("subtract", lambda a, b: a - b),
    ("multiply", lambda a, b: a * b),
    ("divide", lambda a, b: a / (2 + b**2)),
]


@st.composite
def formulas(draw, v, depth=3):
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        return draw(leaves(v))()
    if draw(st.booleans()):
        _, function = draw(st.sampled_from(UNARY))
        return function(draw(formulas(v, depth - 1)))
    _, function = draw(st.sampled_from(BINARY))
    return function(draw(formulas(v, depth - 1)), draw(formulas(v, depth - 1)))


@st.composite
def models(draw):
    model = Model("Fuzzed", "A drawn formula.", source="tests/test_fuzz_engine.py")
    v = Vocabulary(model)
    with model.mode("train"):
        first = draw(formulas(v))
        t = model.define("t", (v.b, v.n), first)
        second = draw(formulas(v))
        # The output reads the intermediate too, so the chain rule runs through it.
        model.define("y", (v.b, v.n), second * t[v.b, v.n] + t[v.b, v.n])
    return model


def check_model(model, batch, features, seed):
    formula = "; ".join(
        f"{d.name}{list(d.indices)} = {d.expression}"
        for d in model.modes["train"].definitions
    )
    try:
        _check_model(model, batch, features, seed)
    except Exception as error:
        raise AssertionError(f"formula: {formula}") from error


def _check_model(model, batch, features, seed):
    layer = layer_class(model)(features, rng=seed)
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(batch, features))
    report = check_gradients(layer, x, rng=rng, rtol=1e-5, atol=1e-7)
    # Normwise: a drawn formula can reach 1e4 in one entry and 1e-3 in another,
    # and the finite-difference error follows the largest (a cube of a sum of
    # squares once failed entrywise at a relative 2e-10).
    assert all(c.passed or c.max_rel_error < 1e-6 for c in report.comparisons), str(
        report
    )


# CI draws the same 25 formulas each run (derandomized: a run's time and result
# do not depend on luck); a longer, random campaign:
# SYMBOLIC_BACKPROP_FUZZ_EXAMPLES=1000.
CAMPAIGN = os.environ.get("SYMBOLIC_BACKPROP_FUZZ_EXAMPLES")
FUZZ_EXAMPLES = int(CAMPAIGN or "25")


@settings(
    max_examples=FUZZ_EXAMPLES,
    derandomize=CAMPAIGN is None,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(
    model=models(),
    batch=st.integers(1, 3),
    features=st.integers(1, 4),
    seed=st.integers(0, 2**16),
)
def test_random_formulas_match_finite_differences(model, batch, features, seed):
    check_model(model, batch, features, seed)


# Faults the fuzzer found, each reduced to its minimal formula and fixed.


def _one_definition(expression_of):
    model = Model("Found", "A regression case.", source="tests/test_fuzz_engine.py")
    v = Vocabulary(model)
    with model.mode("train"):
        model.define("y", (v.b, v.n), expression_of(v))
    return model


def test_gradient_constant_along_an_axis_keeps_its_summed_index_apart():
    """y[b, n] = w[n] * sum_m x[b, m]: the input gradient does not depend on n,
    and the summed index must not be renamed to the free n (it was)."""
    model = _one_definition(
        lambda v: v.w[v.n] * sp.Sum(v.x[v.b, v.m], (v.m, 0, v.N - 1))
    )
    check_model(model, batch=3, features=4, seed=1)


@pytest.mark.parametrize("shift", [-2, -1, 1, 2])
def test_shifted_reads_are_zero_padded_both_ways(shift):
    """Found as a bracket left over after eliminating a shifted read inside a
    Piecewise: the padded read that absorbs it stood in every branch."""
    model = _one_definition(lambda v: v.x[v.b, v.n + shift] * v.w[v.n])
    check_model(model, batch=2, features=4, seed=shift + 10)


def test_piecewise_whose_condition_holds_a_sum():
    """Found: a sum in a Piecewise condition sent the normal form into endless
    recursion; conditions are computed elementwise and left alone."""
    model = Model("Found", "A regression case.", source="tests/test_fuzz_engine.py")
    v = Vocabulary(model)
    energy = sp.Sum(v.x[v.b, v.m] ** 2, (v.m, 0, v.N - 1))
    with model.mode("train"):
        t = model.define("t", (v.b, v.n), v.x[v.b, v.n] * v.w[v.n])
        gate = sp.Piecewise((energy**2, energy > 1), (energy**2 / 16, True))
        model.define("y", (v.b, v.n), t[v.b, v.n] + sp.exp(-gate) * t[v.b, v.n])
    check_model(model, batch=3, features=3, seed=5)


def test_piecewise_with_different_deltas_in_its_branches():
    """Found: SymPy folds a sum of products into the branches of a Piecewise,
    so no delta is common to all branches; the Piecewise is now split into
    0/1 brackets times each branch's value."""
    model = Model("Found", "A regression case.", source="tests/test_fuzz_engine.py")
    v = Vocabulary(model)
    shifted = v.x[v.b, v.n + 1]
    with model.mode("train"):
        t = model.define(
            "t", (v.b, v.n), sp.Piecewise((shifted, shifted > 0), (shifted / 4, True))
        )
        model.define("y", (v.b, v.n), 2 * t[v.b, v.n] + t[v.b, v.n] * v.w[v.n])
    for features in (1, 2, 4):
        check_model(model, batch=2, features=features, seed=3)

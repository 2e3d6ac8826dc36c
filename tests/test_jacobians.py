"""The engine's Jacobians against SymPy's explicit ones, at tiny sizes.

At concrete sizes every tensor entry is its own symbol and the forward pass is
a set of explicit scalar formulas, which ``sympy.diff`` differentiates with no
index calculus at all. The engine's Jacobian, derived once with symbolic sizes
and Kronecker deltas, must give the same value for every pair of entries.
"""

import itertools
import random

import pytest
import sympy as sp

from derivations import derive_jacobian
from derivations.instantiate import Instance
from derivations.models import build

# Sizes small enough to list every entry; a 1x2x4x3 image for the convolution,
# with stride 1 and 'same' padding, and with stride 2 and dilation 2.
CONV = {"B": 1, "C": 2, "O": 2, "H": 4, "W": 3, "K": 3, "S": 1, "D": 1, "P": 1}
CONV.update(Ho=4, Wo=3)
CONV_STRIDED = {**CONV, "S": 2, "D": 2, "H": 5, "Ho": 2, "Wo": 1}
CASES = [
    ("batch_normalization", "train", "x", {"B": 3, "N": 2}),
    ("batch_normalization", "evaluate", "x", {"B": 3, "N": 2}),
    ("channelwise_scaling", "train", "x", {"B": 3, "N": 2}),
    ("channelwise_scaling", "train", "gamma", {"B": 3, "N": 2}),
    ("channelwise_scaling", "train", "beta", {"B": 3, "N": 2}),
    ("dropout", "train", "x", {"B": 3, "N": 2}),
    ("dropout", "evaluate", "x", {"B": 3, "N": 2}),
    ("conv2d", "train", "x", CONV),
    ("conv2d", "train", "W", CONV),
    ("conv2d", "train", "bias", {**CONV, "O": 1, "H": 3, "Ho": 3}),
    ("conv2d", "train", "x", {**CONV, "C": 1, "O": 1, "K": 1, "P": 0}),
    ("conv2d", "train", "x", CONV_STRIDED),
    ("conv2d", "train", "W", CONV_STRIDED),
]


def _point(instance, model, seed):
    """Random values for every symbol: tensor entries and constants."""
    generator = random.Random(seed)
    point = {}
    for entries in instance.values.values():
        for value in entries.values():
            for symbol in value.free_symbols:
                point.setdefault(symbol, sp.Rational(generator.randint(-90, 90), 37))
    for constant in model.constants:
        point[constant.symbol] = sp.Rational(generator.randint(1, 9), 31)
    return point


def _mismatches(name, mode, wrt, sizes, expression=None):
    """Entries where the engine's Jacobian and SymPy's explicit one differ."""
    model = build(name)
    symbols = {size.name: size for size in model.sizes}
    instance = Instance(model, mode, {symbols[k]: v for k, v in sizes.items()})
    jacobian = derive_jacobian(model, mode, wrt)
    expression = jacobian.expression if expression is None else expression(jacobian)
    output = model.modes[mode].output
    point = _point(instance, model, seed=len(name) + len(wrt))

    mismatches, checked = [], 0
    for out_entry in itertools.product(*map(range, instance.shapes[output.name])):
        explicit_row = instance.values[output.name][out_entry]
        for wrt_entry in itertools.product(*map(range, instance.shapes[wrt])):
            indices = dict(zip(output.indices, out_entry, strict=True))
            indices.update(zip(jacobian.wrt_indices, wrt_entry, strict=True))
            engine = instance.evaluate(expression, indices)
            explicit = sp.diff(explicit_row, instance.values[wrt][wrt_entry])
            difference = (engine - explicit).xreplace(point).evalf(40)
            scale = max(1, abs(explicit.xreplace(point).evalf(40)))
            if abs(difference) > 1e-30 * scale:
                mismatches.append((out_entry, wrt_entry, engine, explicit))
            checked += 1
    assert checked > 0
    return mismatches


@pytest.mark.parametrize(("name", "mode", "wrt", "sizes"), CASES)
def test_engine_jacobian_equals_sympy_explicit_jacobian(name, mode, wrt, sizes):
    assert _mismatches(name, mode, wrt, sizes) == []


def test_comparison_catches_a_wrong_jacobian():
    """Dropping the variance term of batch norm's Jacobian must be noticed."""

    def without_last_term(jacobian):
        return sp.Add(*sp.Add.make_args(jacobian.expression)[:-1])

    sizes = {"B": 3, "N": 2}
    assert _mismatches("batch_normalization", "train", "x", sizes, without_last_term)


def test_batch_normalization_jacobian_reads_like_the_course():
    """dy[b,n]/dx[b',n'] = delta_nn' ((delta_bb' - 1/B)/s - xc[b] xc[b'] / (B s^3))."""
    model = build("batch_normalization")
    jacobian = derive_jacobian(model, "train", "x")
    B, N = model.sizes
    b, n = model.indices
    b2, n2 = jacobian.wrt_indices
    mean, var, _ = (d.base for d in model.modes["train"].definitions)
    x = model.tensor("x").base
    eps = model.constants[0].symbol
    std = sp.sqrt(var[n] + eps)
    centred = x[b, n] - mean[n]
    centred2 = x[b2, n] - mean[n]
    course = sp.KroneckerDelta(n, n2) * (
        (sp.KroneckerDelta(b, b2) - 1 / B) / std - centred * centred2 / (B * std**3)
    )
    assert sp.simplify(jacobian.expression - course) == 0
    assert not jacobian.expression.has(sp.Sum), "the centred sum must vanish"

"""The engine's Jacobians against SymPy's explicit ones, at tiny sizes.

At concrete sizes every tensor entry is its own symbol and the forward pass is
a set of explicit scalar formulas, which ``sympy.diff`` differentiates with no
index calculus at all. The engine's Jacobian, derived once with symbolic sizes
and Kronecker deltas, must give the same value for every pair of entries.

A ``Maximum`` becomes ``sympy.Max`` over its entries in the explicit forward;
the engine's Jacobian reads the position of each maximum from the integer
tensors ``<definition>_argmax_<index>``, which are computed here at the random
point, the first maximum in row-major order. The point's values are distinct,
so no two entries tie and ``sympy.diff`` of ``Max`` is never at a kink.
"""

import itertools
import random

import pytest
import sympy as sp

from derivations import derive_jacobian
from derivations.instantiate import Instance
from derivations.models import CATALOG, build
from derivations.notation import Maximum, argmax_bases

# Sizes small enough to list every entry; a 1x2x4x3 image for the convolution,
# with stride 1 and 'same' padding, and with stride 2 and dilation 2. An even
# kernel with 'same' padding puts its extra zero row and column at the bottom
# and right, so only P = 0 shows at the top and left.
CONV = {"B": 1, "C": 2, "O": 2, "H": 4, "W": 3, "K": 3, "S": 1, "D": 1, "P": 1}
CONV.update(Ho=4, Wo=3)
CONV_STRIDED = {**CONV, "S": 2, "D": 2, "H": 5, "Ho": 2, "Wo": 1}
CONV_EVEN_SAME = {**CONV, "C": 1, "K": 2, "P": 0}
CONV_DILATED_SAME = {**CONV, "C": 1, "O": 1, "D": 2, "P": 2}
CONV_UNPADDED_STRIDED = {**CONV_EVEN_SAME, "S": 2, "W": 5, "Ho": 2, "Wo": 2}
# Max pooling: disjoint 2x2 windows, overlapping 3x3 windows with stride 1, and
# a last row and column that no window reaches.
POOL = {"B": 1, "C": 2, "H": 4, "W": 4, "K": 2, "S": 2, "Ho": 2, "Wo": 2}
POOL_OVERLAPPING = {**POOL, "C": 1, "H": 3, "K": 3, "S": 1, "Ho": 1}
POOL_CROPPED = {**POOL, "C": 1, "H": 3, "W": 5, "Ho": 1}
# One output entry per input entry (Flatten's model is the identity on (b, n)).
ELEMENTWISE = ("relu", "leaky_relu", "elu", "softplus", "flatten")
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
    ("conv2d", "train", "bias", CONV_STRIDED),
    ("conv2d", "train", "x", CONV_EVEN_SAME),
    ("conv2d", "train", "W", CONV_EVEN_SAME),
    ("conv2d", "train", "x", CONV_DILATED_SAME),
    ("conv2d", "train", "x", CONV_UNPADDED_STRIDED),
    ("conv2d", "train", "W", CONV_UNPADDED_STRIDED),
    ("linear", "train", "x", {"B": 2, "I": 3, "O": 2}),
    ("linear", "train", "W", {"B": 2, "I": 3, "O": 2}),
    ("linear", "train", "bias", {"B": 2, "I": 3, "O": 2}),
    *((name, "train", "x", {"B": 2, "N": 3}) for name in ELEMENTWISE),
    ("layer_normalization", "train", "x", {"B": 2, "N": 3}),
    ("layer_normalization", "train", "gamma", {"B": 2, "N": 3}),
    ("layer_normalization", "train", "beta", {"B": 2, "N": 3}),
    ("mse_criterion", "train", "x", {"B": 2, "N": 3}),
    ("class_nll_criterion", "train", "x", {"B": 2, "N": 3}),
    ("softmax", "train", "x", {"B": 2, "N": 3}),
    ("log_softmax", "train", "x", {"B": 2, "N": 3}),
    ("max_pool2d", "train", "x", POOL),
    ("max_pool2d", "train", "x", POOL_OVERLAPPING),
    ("max_pool2d", "train", "x", POOL_CROPPED),
]


def _point(instance, model, seed):
    """Distinct nonzero random values for every symbol: tensor entries, constants.

    Distinct, so that no two entries of a maximum tie; nonzero, so that no entry
    sits on the kink of a ReLU. Sorted by name, so that the point does not
    depend on the hash seed.
    """
    generator = random.Random(seed)
    symbols = {
        symbol
        for entries in instance.values.values()
        for value in entries.values()
        for symbol in value.free_symbols
    }
    symbols = sorted(symbols, key=str)
    numerators = generator.sample([v for v in range(-90, 91) if v], len(symbols))
    point = {
        symbol: sp.Rational(numerator, 37)
        for symbol, numerator in zip(symbols, numerators, strict=True)
    }
    for constant in model.constants:
        point[constant.symbol] = sp.Rational(generator.randint(1, 9), 31)
    return point


def _expand_maxima(expr):
    """Replaces every Maximum with numeric bounds by ``sympy.Max`` of its entries.

    The entries are listed in row-major order of the Maximum's indices, the
    order in which the first maximum is found.
    """
    if not isinstance(expr, sp.Basic) or not expr.has(Maximum):
        return expr
    if isinstance(expr, Maximum):
        body = _expand_maxima(expr.function)
        bound = [limit[0] for limit in expr.limits]
        ranges = [range(int(low), int(high) + 1) for _, low, high in expr.limits]
        return sp.Max(
            *(
                body.xreplace(dict(zip(bound, map(sp.Integer, values), strict=True)))
                for values in itertools.product(*ranges)
            )
        )
    return expr.func(*(_expand_maxima(arg) for arg in expr.args))


class ExplicitInstance(Instance):
    """An ``Instance`` that also knows maxima and, at ``point``, their argmax.

    ``Instance`` expands sums but not a ``Maximum``, and cannot read the integer
    tensors ``<definition>_argmax_<index>`` of the engine's Jacobians: their
    values depend on the numbers at the point where the Jacobian is evaluated.
    Set ``point`` before evaluating an expression that reads them.
    """

    def __init__(self, model, mode, sizes):
        self._point, self._first_maxima = None, {}
        self.argmax = {
            str(base.label): (definition, position)
            for definition in model.modes[mode].definitions
            for position, (_, base) in enumerate(argmax_bases(definition))
        }
        super().__init__(model, mode, sizes)

    @property
    def point(self):
        """``{symbol: value}`` at which the argmax tensors are read."""
        return self._point

    @point.setter
    def point(self, point):
        self._point, self._first_maxima = point, {}

    def evaluate(self, expr, indices):
        concrete = {index: sp.Integer(value) for index, value in indices.items()}
        expr = sp.sympify(expr).xreplace(concrete).xreplace(self.sizes)
        return super().evaluate(_expand_maxima(expr), indices)

    def read(self, name, entry):
        if name not in self.argmax:
            return super().read(name, entry)
        definition, position = self.argmax[name]
        key = (definition.name, entry)
        if key not in self._first_maxima:
            self._first_maxima[key] = self._first_maximum(definition, entry)
        return sp.Integer(self._first_maxima[key][position])

    def _first_maximum(self, definition, entry):
        """The bound indices of the first maximum of ``definition[entry]``."""
        maximum = definition.expression
        bound = [limit[0] for limit in maximum.limits]
        ranges = [
            range(int(sp.sympify(high).xreplace(self.sizes)) + 1)
            for _, _, high in maximum.limits
        ]
        at = dict(zip(definition.indices, entry, strict=True))
        candidates = list(itertools.product(*ranges))
        values = [
            self.evaluate(
                maximum.function, {**at, **dict(zip(bound, choice, strict=True))}
            ).xreplace(self.point)
            for choice in candidates
        ]
        # list.index finds the first of equal maxima, the row-major first.
        return candidates[values.index(max(values))]


def _mismatches(name, mode, wrt, sizes, expression=None):
    """Entries where the engine's Jacobian and SymPy's explicit one differ."""
    model = build(name)
    symbols = {size.name: size for size in model.sizes}
    concrete = {symbols[k]: v for k, v in sizes.items()}
    instance = ExplicitInstance(model, mode, concrete)
    jacobian = derive_jacobian(model, mode, wrt)
    expression = jacobian.expression if expression is None else expression(jacobian)
    output = model.modes[mode].output
    point = _point(instance, model, seed=len(name) + len(wrt))
    instance.point = point

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


def test_cases_cover_every_catalog_model_tensor_and_distinct_mode():
    """Each input and parameter of each catalog model, in training mode and in
    any other mode whose definitions differ from training's."""
    covered = {(name, mode, wrt) for name, mode, wrt, _ in CASES}
    missing = []
    for name in CATALOG:
        model = build(name)
        train = model.modes["train"].definitions
        modes = [
            m
            for m in model.modes
            if m == "train" or model.modes[m].definitions != train
        ]
        differentiable = [
            tensor.name
            for tensor in model.tensors
            if tensor.role in ("input", "parameter")
        ]
        for mode, wrt in itertools.product(modes, differentiable):
            if (name, mode, wrt) not in covered:
                missing.append((name, mode, wrt))
    assert missing == []


def test_argmax_reads_find_the_first_maximum_in_row_major_order():
    """The extension above must pick the first of tied maxima, as the runtime."""
    model = build("max_pool2d")
    symbols = {size.name: size for size in model.sizes}
    instance = ExplicitInstance(
        model, "train", {symbols[k]: v for k, v in POOL.items()}
    )
    # Window (0, 0, 0, 1) covers x[0, 0, 0:2, 2:4]; its last three entries tie.
    tied = {(0, 0, 0, 3), (0, 0, 1, 2), (0, 0, 1, 3)}
    instance.point = {
        value: sp.Integer(5 if entry in tied else 0)
        for entry, value in instance.values["x"].items()
    }
    assert instance.read("y_argmax_kh", (0, 0, 0, 1)) == 0
    assert instance.read("y_argmax_kw", (0, 0, 0, 1)) == 1


def test_comparison_catches_a_wrong_jacobian():
    """Dropping the variance term of batch norm's Jacobian must be noticed."""

    def without_last_term(jacobian):
        return sp.Add(*sp.Add.make_args(jacobian.expression)[:-1])

    sizes = {"B": 3, "N": 2}
    assert _mismatches("batch_normalization", "train", "x", sizes, without_last_term)


def test_batch_normalization_jacobian_reads_like_the_course():
    """dy[b,n]/dx[b',n'] = delta_nn' ((delta_bb' - 1/B)/s - xc[b] xc[b'] / (B s^3)).

    The model shifts x by its first sample (xs = x - x[0]) for exactness; the
    centred input xs - mean equals the course's x - E[x], and the terms of the
    shift cancel."""
    model = build("batch_normalization")
    jacobian = derive_jacobian(model, "train", "x")
    B, N = model.sizes
    b, n = model.indices
    b2, n2 = jacobian.wrt_indices
    bases = {d.name: d.base for d in model.modes["train"].definitions}
    mean, var, x = bases["mean"], bases["var"], bases["xs"]
    eps = model.constants[0].symbol
    std = sp.sqrt(var[n] + eps)
    centred = x[b, n] - mean[n]
    centred2 = x[b2, n] - mean[n]
    course = sp.KroneckerDelta(n, n2) * (
        (sp.KroneckerDelta(b, b2) - 1 / B) / std - centred * centred2 / (B * std**3)
    )
    assert sp.simplify(jacobian.expression - course) == 0
    assert not jacobian.expression.has(sp.Sum), "the centred sum must vanish"

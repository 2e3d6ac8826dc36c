"""Models and derived expressions at concrete sizes, entry by entry.

Used to check the engine against SymPy's plain differentiation: at tiny sizes
every tensor entry becomes its own symbol, the forward pass becomes explicit
scalar formulas, and ``sympy.diff`` gives the explicit Jacobian. Sums are
expanded here, by plain substitution, not by ``Sum.doit``.
"""

from __future__ import annotations

import itertools

import sympy as sp

from derivations.notation import Model


def expand_sums(expr):
    """Replaces every Sum with numeric bounds by the explicit sum of its terms."""
    if not isinstance(expr, sp.Basic) or not expr.has(sp.Sum):
        return expr
    if isinstance(expr, sp.Sum):
        body = expand_sums(expr.function)
        terms = [body]
        for index, low, high in reversed(expr.limits):
            if not (low.is_Integer and high.is_Integer):
                raise ValueError(f"sum over {index} has symbolic bounds {low}, {high}")
            terms = [
                term.xreplace({index: sp.Integer(value)})
                for term in terms
                for value in range(int(low), int(high) + 1)
            ]
        return sp.Add(*terms)
    return expr.func(*(expand_sums(arg) for arg in expr.args))


def _entries(shape):
    return itertools.product(*(range(int(size)) for size in shape))


class Instance:
    """A model at concrete sizes: an explicit formula for every entry.

    Args:
        model: the model.
        mode: the mode whose definitions are instantiated.
        sizes: ``{size symbol: int}`` for every size of the model.
    """

    def __init__(self, model: Model, mode: str, sizes: dict):
        self.model = model
        self.sizes = {symbol: sp.Integer(value) for symbol, value in sizes.items()}
        self.values: dict[str, dict] = {}
        self.shapes: dict[str, tuple] = {}
        for tensor in model.tensors:
            shape = self.shape(tensor.shape)
            self.shapes[tensor.name] = shape
            self.values[tensor.name] = {
                entry: sp.Symbol(
                    f"{tensor.name}_{'_'.join(map(str, entry))}", real=True
                )
                for entry in _entries(shape)
            }
        for definition in model.modes[mode].definitions:
            shape = self.shape(definition.shape)
            self.shapes[definition.name] = shape
            self.values[definition.name] = {
                entry: self.evaluate(
                    definition.expression,
                    dict(zip(definition.indices, entry, strict=True)),
                )
                for entry in _entries(shape)
            }
        self.output = model.modes[mode].output.name

    def shape(self, shape) -> tuple:
        return tuple(int(sp.sympify(size).xreplace(self.sizes)) for size in shape)

    def read(self, name: str, entry: tuple):
        """The value of ``name[entry]``: zero outside the tensor's range."""
        shape = self.shapes[name]
        if any(
            not 0 <= position < size
            for position, size in zip(entry, shape, strict=True)
        ):
            return sp.S.Zero
        return self.values[name][entry]

    def evaluate(self, expr, indices: dict):
        """``expr`` at concrete sizes and index values, reads replaced by values."""
        concrete = {index: sp.Integer(value) for index, value in indices.items()}
        # Indices first: replacing a size rewrites the range inside each index.
        expr = expand_sums(sp.sympify(expr).xreplace(concrete).xreplace(self.sizes))
        reads = {}
        for read in expr.atoms(sp.Indexed):
            entry = tuple(read.indices)
            if not all(position.is_Integer for position in entry):
                raise ValueError(f"read {read} has free indices after substitution")
            reads[read] = self.read(str(read.base.label), tuple(map(int, entry)))
        return expr.xreplace(reads)

"""Affine index expressions: ``sum_i c_i * index_i + offset``.

An axis of a tensor is read at an affine expression of indices, such as
``h + kh - P``. This module splits such an expression into its integer
coefficients and its offset, bounds its range, and decides ranges that SymPy
can prove.
"""

from __future__ import annotations

import sympy as sp


def index_atoms(expr) -> list[sp.Idx]:
    """The indices in ``expr``, in a deterministic order."""
    return sorted(expr.atoms(sp.Idx), key=lambda index: str(index))


def affine_parts(expr, context: str) -> tuple[dict, sp.Expr]:
    """Splits ``expr`` into ``({index: coefficient}, offset)``.

    A coefficient is a nonzero integer or an integer expression of sizes whose
    sign is known (a stride, a dilation, or minus one). Reads of integer
    tensors (argmax positions) are opaque: they belong to the offset, and the
    indices inside them get no coefficient.

    Raises:
        NotImplementedError: ``expr`` is not affine in its indices with such
            coefficients; ``context`` names where it was read.
    """
    expr = sp.sympify(expr)
    reads = sorted(expr.atoms(sp.Indexed), key=sp.srepr)
    opaque = {read: sp.Dummy("read") for read in reads}
    outer = expr.xreplace(opaque)
    indices = index_atoms(outer)
    stand_ins = {index: sp.Dummy(str(index)) for index in indices}
    plain = sp.expand(outer.xreplace(stand_ins))
    coefficients = {}
    for index in indices:
        coefficient = sp.diff(plain, stand_ins[index])
        allowed = coefficient.is_integer and (
            coefficient.is_Number or coefficient.is_positive or coefficient.is_negative
        )
        if coefficient.has(*stand_ins.values(), *opaque.values()) or not allowed:
            raise NotImplementedError(
                f"index expression {expr} in {context} is not affine with integer "
                "coefficients"
            )
        if coefficient != 0:
            coefficients[index] = coefficient
    offset = sp.expand(plain.xreplace({stand_ins[i]: 0 for i in indices}))
    back = {symbol: read for read, symbol in opaque.items()}
    return coefficients, offset.xreplace(back)


def value_range(expr, context: str) -> tuple[sp.Expr, sp.Expr]:
    """The smallest and largest value an affine index expression takes."""
    coefficients, offset = affine_parts(expr, context)
    low, high = offset, offset
    for index, coefficient in coefficients.items():
        ends = (coefficient * index.lower, coefficient * index.upper)
        low += ends[0] if coefficient.is_positive else ends[1]
        high += ends[1] if coefficient.is_positive else ends[0]
    return sp.expand(low), sp.expand(high)


def provably_within(expr, upper, context: str) -> bool:
    """True when ``0 <= expr <= upper`` holds for every value of its indices."""
    low, high = value_range(expr, context)
    return bool(sp.expand(low).is_nonnegative) and bool(
        sp.expand(upper - high).is_nonnegative
    )


class InRange(sp.Function):
    """Iverson bracket ``[0 <= e <= upper]``: 1 inside the range, 0 outside.

    Delta elimination leaves one where a solved index may fall outside its
    range; a zero-padded read of the same range absorbs it.
    """

    nargs = 2

    @classmethod
    def eval(cls, expr, upper):
        if expr.is_Number and upper.is_Number:
            return sp.S.One if 0 <= expr <= upper else sp.S.Zero
        return None

    def _latex(self, printer):
        expr, upper = (printer._print(arg) for arg in self.args)
        return rf"\left[0 \le {expr} \le {upper}\right]"

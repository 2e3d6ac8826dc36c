"""Adjoints that are identically zero.

An intermediate the output does not depend on still receives a gradient from
the chain rule, written in terms of other adjoints: batch normalization's
shift by the first sample gets ``grad_shift[n] = -sum_b grad_xs[b, n]``, which
is zero because the output is invariant under the shift. Only substituting the
adjoints it reads by their own formulas, level by level, and applying the
definition identities shows it. An adjoint proved zero is dropped, and with it
everything the chain rule would propagate through it.

The proof is exact: the adjoint is dropped only when the simplified expansion
is the empty sum, never on a numerical test.
"""

from __future__ import annotations

import sympy as sp

from derivations.calculus import (
    FreshIndices,
    Term,
    normalize,
    simplify_terms,
    terms_to_expr,
)


def _adjoint_reads(expr, known) -> list:
    return [read for read in expr.atoms(sp.Indexed) if str(read.base.label) in known]


def sums_adjoints(terms: list[Term], known) -> bool:
    """Whether a term sums over a read of an adjoint in ``known``.

    A sum over an adjoint is where an invariance of the output shows: the
    gradient of a shift is the sum of the gradient of what it shifts.
    """
    for term in terms:
        for read in _adjoint_reads(term.factor, known):
            if set(read.indices) & set(term.summed):
                return True
    return False


def substitute_adjoints(expr, known, fresh: FreshIndices):
    """``expr`` with each read of an adjoint in ``known`` replaced by its formula.

    Args:
        expr: an expression that reads adjoints with ``Indexed``.
        known: ``{adjoint name: (indices, expression)}``.
        fresh: names the bound indices of each substituted formula apart.
    """
    replacements = {}
    for read in _adjoint_reads(expr, known):
        indices, formula = known[str(read.base.label)]
        formula = fresh.rename_bound(formula)
        replacements[read] = formula.xreplace(
            dict(zip(indices, read.indices, strict=True))
        )
    return expr.xreplace(replacements)


def _distribute(expr, fresh: FreshIndices):
    """``expr`` with every sum split over the terms of its body.

    The identities rewrite a sum only when all of its body is known, so each
    addend must stand in a sum of its own: ``sum_b (g[b] + xs[b] - mean)``
    becomes ``sum_b g[b] + (B * mean - B * mean)``.
    """
    pieces = []
    for term in normalize(expr, fresh):
        for piece in sp.Add.make_args(sp.expand(term.factor)):
            pieces.append(Term(term.summed, piece).to_expr())
    return sp.Add(*pieces)


def vanishes(
    terms: list[Term],
    known,
    fresh: FreshIndices,
    model_indices,
    identities=(),
    free=(),
    context="",
) -> bool:
    """Whether the sum of ``terms`` is identically zero.

    The adjoints it reads are substituted by their formulas one level at a
    time, and the result distributed and simplified (deltas eliminated,
    definition identities applied, like terms merged) after each level, until
    it is the empty sum (zero) or no adjoint is left to substitute (not shown
    to vanish).

    Args:
        terms: the terms of an adjoint.
        known: ``{adjoint name: (indices, expression)}`` of the adjoints
            derived so far.
        fresh: makes the bound indices of substituted formulas.
        model_indices: the model's indices, to name summed indices back.
        identities: the mode's ``SumDefinition`` identities.
        free: the adjoint's own indices.
        context: names the definition, for error messages.
    """
    expr = terms_to_expr(terms)
    for _ in range(len(known)):
        if not _adjoint_reads(expr, known):
            return False
        expr = _distribute(substitute_adjoints(expr, known, fresh), fresh)
        simplified = simplify_terms(
            expr,
            fresh,
            model_indices,
            context=context,
            identities=identities,
            free=free,
        )
        # Sum-free terms stay apart in a simplified adjoint; here they must
        # meet, or B * mean - B * mean would not cancel.
        summed = [term for term in simplified if term.summed]
        rest = sp.expand(sp.Add(*(t.factor for t in simplified if not t.summed)))
        if not summed and rest == 0:
            return True
        expr = terms_to_expr(summed) + rest
    return False

"""Identities that follow from the model's own definitions.

A definition ``t[I] = c * sum_S body`` lets the engine read any sum of the same
body back as ``t[J] / c``. With it, sums that vanish by construction vanish in
the derivation too: the centred sum ``sum_b (x[b, n] - mean[n])`` of batch
normalization becomes ``B * mean[n] - B * mean[n] = 0``, as the course writes
it by hand.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derivations.calculus import (
    FreshIndices,
    Term,
    eliminate_deltas,
    normalize,
    split_factor,
)


@dataclass(frozen=True)
class SumDefinition:
    """``base[indices] = scale * sum over summed of body``."""

    base: sp.IndexedBase
    indices: tuple
    summed: tuple
    scale: sp.Expr
    body: sp.Expr


def sum_definitions(definitions) -> list[SumDefinition]:
    """The definitions that are one scaled sum."""
    found = []
    for definition in definitions:
        terms = normalize(definition.expression, FreshIndices())
        if len(terms) != 1 or not terms[0].summed:
            continue
        scale, body = split_factor(terms[0].factor, terms[0].summed)
        if scale.atoms(sp.Idx) or scale.atoms(sp.Indexed):
            continue
        found.append(
            SumDefinition(
                definition.base, definition.indices, terms[0].summed, scale, body
            )
        )
    return found


def _unify(pattern, target, variables, mapping):
    """Extends ``mapping`` so that ``pattern`` reads become ``target`` reads."""
    for pattern_read in sorted(pattern.atoms(sp.Indexed), key=str):
        candidates = [
            read for read in target.atoms(sp.Indexed) if read.base == pattern_read.base
        ]
        if len(candidates) != 1:
            return None
        for left, right in zip(
            pattern_read.indices, candidates[0].indices, strict=True
        ):
            if left in variables:
                if mapping.setdefault(left, right) != right:
                    return None
    return mapping


def _recognize(term: Term, definition: SumDefinition):
    """``term`` rewritten as a read of ``definition``, or None."""
    if len(term.summed) != len(definition.summed):
        return None
    variables = set(definition.indices) | set(definition.summed)
    mapping = _unify(definition.body, term.factor, variables, {})
    if mapping is None or set(mapping) != variables:
        return None
    if {mapping[s] for s in definition.summed} != set(term.summed):
        return None
    if any(mapping[i].atoms(sp.Idx) & set(term.summed) for i in definition.indices):
        return None
    for index, image in mapping.items():
        if isinstance(image, sp.Idx) and (image.lower, image.upper) != (
            index.lower,
            index.upper,
        ):
            return None
    ratio = sp.simplify(term.factor / definition.body.xreplace(mapping))
    if ratio.atoms(sp.Idx) & set(term.summed) or ratio.atoms(sp.Indexed):
        return None
    read = definition.base[tuple(mapping[i] for i in definition.indices)]
    return ratio * read / definition.scale


def apply_identities(terms: list[Term], definitions: list[SumDefinition], context=""):
    """Replaces a term by sum-free terms when every sum in it is a definition."""
    if not definitions:
        return terms
    result = []
    for term in terms:
        if not term.summed:
            result.append(term)
            continue
        outside, inside = split_factor(term.factor, term.summed)
        total = sp.S.Zero
        solved = True
        for piece in sp.Add.make_args(sp.expand(inside)):
            reduced = eliminate_deltas(Term(term.summed, piece), context=context)
            if not reduced.summed:
                total += reduced.factor
                continue
            rewritten = next(
                (
                    found
                    for found in (_recognize(reduced, d) for d in definitions)
                    if found is not None
                ),
                None,
            )
            if rewritten is None:
                solved = False
                break
            total += rewritten
        if not solved:
            result.append(term)
            continue
        total = sp.expand(outside * total)
        if total != 0:
            result.append(Term((), sp.factor_terms(total)))
    return result

"""The index calculus: derivatives with Kronecker deltas and their elimination.

An expression is brought to a sum of *terms*, each ``sum_S factor`` with ``S``
a set of summed indices and ``factor`` a product with no sum inside. A term's
Kronecker deltas are then eliminated against its summed indices: a delta
``delta(a, c)`` in which a summed index ``s`` appears with coefficient +1 or -1
is solved for ``s``, ``s`` is replaced everywhere and its sum disappears. When
the solution may leave the range of ``s`` (an affine delta, as in convolution),
an Iverson bracket records it, and a zero-padded read of the same range absorbs
the bracket. SymPy's own delta summation is not used: over symbolic bounds it
leaves Piecewise conditions behind.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derivations.affine import InRange, affine_parts, provably_within


class FreshIndices:
    """Makes new index names (b', b'', ...) that never clash with the model's."""

    def __init__(self):
        self.used: set[str] = set()

    def like(self, index: sp.Idx) -> sp.Idx:
        label = str(index.label).rstrip("'")
        name = label + "'"
        while name in self.used:
            name += "'"
        self.used.add(name)
        return sp.Idx(sp.Symbol(name, integer=True), (index.lower, index.upper))

    def rename_bound(self, expr):
        """Gives every index bound by a Sum (or a Maximum) a fresh name."""
        if not isinstance(expr, sp.Basic) or not expr.atoms(sp.Idx):
            return expr
        if isinstance(expr, sp.Sum) or type(expr).__name__ == "Maximum":
            body = self.rename_bound(expr.function)
            limits = []
            for index, low, high in expr.limits:
                new = self.like(index)
                body = body.xreplace({index: new})
                limits.append((new, low, high))
            return expr.func(body, *limits)
        return expr.func(*(self.rename_bound(arg) for arg in expr.args))


def _reads_and_sums(expr, base_names=None):
    """The outermost Indexed reads and Sums of ``expr`` that involve
    ``base_names`` (any name when None)."""
    found = []

    def involves(node):
        return base_names is None or any(
            str(r.base.label) in base_names for r in node.atoms(sp.Indexed)
        )

    def visit(node):
        if isinstance(node, (sp.Indexed, sp.Sum)):
            if node.atoms(sp.Indexed) and involves(node):
                found.append(node)
            return
        for arg in node.args:
            visit(arg)

    visit(expr)
    unique = []
    for item in found:
        if item not in unique:
            unique.append(item)
    return unique


def derivative(
    expr, wrt: sp.IndexedBase, wrt_indices, fresh: FreshIndices, through=None
):
    """``d expr / d wrt[wrt_indices]`` with Kronecker deltas.

    Args:
        expr: a scalar expression that reads tensors with ``Indexed``.
        wrt: the tensor to differentiate with respect to.
        wrt_indices: the free indices of the derivative, one per axis of ``wrt``.
        fresh: makes names for indices bound in substituted Jacobians.
        through: ``{name: (indices, jacobian)}`` for intermediates whose own
            Jacobian with respect to ``wrt`` is known: a read ``t[J]`` then
            contributes that Jacobian with its indices replaced by ``J``.

    Raises:
        NotImplementedError: a construct whose derivative the engine cannot take.
    """
    through = through or {}
    names = {str(wrt.label), *through}
    expr = sp.sympify(expr)
    if not any(str(r.base.label) in names for r in expr.atoms(sp.Indexed)):
        return sp.S.Zero
    if isinstance(expr, sp.Indexed):
        name = str(expr.base.label)
        if name == str(wrt.label):
            return sp.Mul(
                *(
                    sp.KroneckerDelta(k, j)
                    for k, j in zip(wrt_indices, expr.indices, strict=True)
                )
            )
        indices, jacobian = through[name]
        jacobian = fresh.rename_bound(jacobian)
        return jacobian.xreplace(dict(zip(indices, expr.indices, strict=True)))
    if isinstance(expr, sp.Sum):
        return sp.Sum(
            derivative(expr.function, wrt, wrt_indices, fresh, through), *expr.limits
        )
    if expr.has(sp.Derivative, sp.Integral, sp.Product):
        raise NotImplementedError(f"differentiating {type(expr).__name__} terms")
    # Elementary calculus on scalars is SymPy's: stand a symbol in for each read
    # or sum, differentiate, and multiply by the tensor derivative of the part.
    # Every read gets a real stand-in, the constant ones too: a complex one
    # would make SymPy differentiate Abs through re() and im().
    parts = _reads_and_sums(expr, names)
    constants = [part for part in _reads_and_sums(expr) if part not in parts]
    stand_ins = {
        part: sp.Dummy(f"z{k}", real=True) for k, part in enumerate(parts + constants)
    }
    plain = expr.xreplace(stand_ins)
    back = {symbol: part for part, symbol in stand_ins.items()}
    total = sp.S.Zero
    for part in parts:
        symbol = stand_ins[part]
        outer = sp.diff(plain, symbol)
        if outer.has(sp.Derivative, sp.Subs):
            raise NotImplementedError(
                f"the derivative of {expr} with respect to {part} (SymPy left "
                "an unevaluated derivative)"
            )
        outer = outer.xreplace(back)
        if outer != 0:
            total += outer * derivative(part, wrt, wrt_indices, fresh, through)
    return total


@dataclass(frozen=True)
class Term:
    """``sum over summed of factor``; ``factor`` holds no Sum of a summed index."""

    summed: tuple
    factor: sp.Expr

    def times(self, other: Term, fresh: FreshIndices) -> Term:
        taken = set(self.summed) | set(self.factor.atoms(sp.Idx))
        other_factor, other_summed = other.factor, []
        for index in other.summed:
            if index in taken:
                new = fresh.like(index)
                other_factor = other_factor.xreplace({index: new})
                index = new
            other_summed.append(index)
        mine_factor, mine_summed = self.factor, []
        other_atoms = set(other_factor.atoms(sp.Idx))
        for index in self.summed:
            if index in other_atoms:
                new = fresh.like(index)
                mine_factor = mine_factor.xreplace({index: new})
                index = new
            mine_summed.append(index)
        return Term(
            tuple(mine_summed) + tuple(other_summed), mine_factor * other_factor
        )

    def to_expr(self):
        if not self.summed:
            return self.factor
        outside, inside = split_factor(self.factor, self.summed)
        limits = [(index, index.lower, index.upper) for index in self.summed]
        return outside * sp.Sum(inside, *limits)


def split_factor(factor, summed):
    """Splits a product into the part free of ``summed`` and the rest."""
    outside, inside = [], []
    summed = set(summed)
    for arg in sp.Mul.make_args(factor):
        (inside if arg.atoms(sp.Idx) & summed else outside).append(arg)
    return sp.Mul(*outside), sp.Mul(*inside)


def normalize(expr, fresh: FreshIndices) -> list[Term]:
    """Brings ``expr`` to a list of terms: products distributed, sums outermost."""
    expr = sp.sympify(expr)
    if expr == 0:
        return []
    if not expr.has(sp.KroneckerDelta, sp.Sum):
        return [Term((), expr)]
    if expr.is_Add:
        return [term for arg in expr.args for term in normalize(arg, fresh)]
    if expr.is_Mul:
        terms = [Term((), sp.S.One)]
        for arg in expr.args:
            parts = normalize(arg, fresh)
            terms = [term.times(part, fresh) for term in terms for part in parts]
        return terms
    if isinstance(expr, sp.Sum):
        summed = []
        for index, low, high in expr.limits:
            if not isinstance(index, sp.Idx) or (low, high) != (
                index.lower,
                index.upper,
            ):
                raise NotImplementedError(
                    f"a sum whose bounds ({low}, {high}) are not the whole range of "
                    f"its index {index}"
                )
            summed.append(index)
        return [
            Term(tuple(summed) + term.summed, term.factor)
            for term in normalize(expr.function, fresh)
        ]
    if isinstance(expr, sp.Piecewise):
        # Only the values matter: a sum in a condition is computed elementwise.
        if not any(value.has(sp.KroneckerDelta, sp.Sum) for value, _ in expr.args):
            return [Term((), expr)]
        return normalize(_factor_piecewise(expr), fresh)
    if (
        expr.is_Pow
        and expr.exp.is_Integer
        and expr.exp > 1
        and expr.base.has(sp.KroneckerDelta, sp.Sum)
    ):
        return normalize(sp.Mul(*([expr.base] * int(expr.exp)), evaluate=False), fresh)
    return [Term((), expr)]


def _factor_piecewise(expr):
    """Moves the deltas and sums common to every branch out of a Piecewise.

    SymPy folds products into Piecewise branches; the deltas must stand outside
    for elimination: ``Piecewise((d * g, c), (0, True)) = d * Piecewise((g, c),
    (0, True))``.
    """
    branches = [(sp.Mul.make_args(value), condition) for value, condition in expr.args]
    nonzero = [args for args, _ in branches if args != (sp.S.Zero,)]
    if not nonzero:
        return sp.S.Zero
    common = [
        arg
        for arg in nonzero[0]
        if arg.has(sp.KroneckerDelta, sp.Sum) and all(arg in args for args in nonzero)
    ]
    if not common:
        return _indicator_sum(expr)
    rest = []
    for args, condition in branches:
        if args == (sp.S.Zero,):
            rest.append((sp.S.Zero, condition))
            continue
        remaining = list(args)
        for arg in common:
            remaining.remove(arg)
        rest.append((sp.Mul(*remaining), condition))
    return sp.Mul(*common) * sp.Piecewise(*rest, evaluate=False)


def _indicator_sum(expr):
    """``Piecewise((v1, c1), (v2, c2), ...)`` as ``sum_i [branch i taken] * v_i``.

    Each bracket is a Piecewise of 0 and 1 with no delta inside, so the values,
    with their deltas and sums, can be distributed and eliminated like any
    product.
    """
    total = sp.S.Zero
    earlier = []
    for value, condition in expr.args:
        if value != 0:
            bracket = sp.Piecewise(
                *[(0, c) for c in earlier], (1, condition), (0, True), evaluate=False
            )
            total += bracket * value
        earlier.append(condition)
    return total


def _solve_delta(delta, summed, prefer, context):
    """The summed index a delta is best solved for, with its solution."""
    difference = delta.args[0] - delta.args[1]
    coefficients, _ = affine_parts(difference, context)
    choices = []
    for index in summed:
        coefficient = coefficients.get(index, 0)
        if coefficient not in (1, -1):
            continue
        solution = sp.expand(index - difference / coefficient)
        exact = provably_within(solution, index.upper, context)
        choices.append(((not exact, index not in prefer, str(index)), index, solution))
    if not choices:
        return None
    _, index, solution = min(choices, key=lambda choice: choice[0])
    return index, solution


def _zero_outside(expr, position, upper) -> bool:
    """True when ``expr`` is zero whenever ``position`` leaves ``0..upper``:
    it multiplies by a zero-padded read of that range in every branch."""
    if expr == 0:
        return True
    if isinstance(expr, sp.Indexed):
        return any(
            index == position and sp.expand(size - 1 - upper) == 0
            for index, size in zip(expr.indices, expr.base.shape, strict=True)
        )
    if expr.is_Mul:
        return any(_zero_outside(arg, position, upper) for arg in expr.args)
    if expr.is_Pow and expr.exp.is_positive:
        return _zero_outside(expr.base, position, upper)
    if expr.is_Add:
        return all(_zero_outside(arg, position, upper) for arg in expr.args)
    if isinstance(expr, sp.Piecewise):
        return all(_zero_outside(value, position, upper) for value, _ in expr.args)
    return False


def _absorb_brackets(factor):
    """Drops brackets that a zero-padded read of the same range already implies."""
    args = list(sp.Mul.make_args(factor))
    rest = sp.Mul(*(arg for arg in args if not isinstance(arg, InRange)))
    kept = [
        arg
        for arg in args
        if not (isinstance(arg, InRange) and _zero_outside(rest, *arg.args))
    ]
    return sp.Mul(*kept)


def eliminate_deltas(term: Term, prefer=(), context="") -> Term:
    """Removes the Kronecker deltas of ``term`` that a summed index can absorb."""
    summed = list(term.summed)
    factor = term.factor.replace(
        lambda e: (
            e.is_Pow and isinstance(e.base, sp.KroneckerDelta) and e.exp.is_positive
        ),
        lambda e: e.base,
    )
    progress = True
    while progress:
        progress = False
        deltas = [
            a for a in sp.Mul.make_args(factor) if isinstance(a, sp.KroneckerDelta)
        ]
        for delta in sorted(deltas, key=str):
            choice = _solve_delta(delta, summed, prefer, context)
            if choice is None:
                continue
            index, solution = choice
            factor = factor.xreplace({index: solution})
            if not provably_within(solution, index.upper, context):
                factor = factor * InRange(solution, index.upper)
            summed.remove(index)
            progress = True
            break
    factor = _absorb_brackets(factor)
    # A sum over an index the factor no longer reads counts its range.
    for index in list(summed):
        if index not in factor.atoms(sp.Idx):
            factor = factor * (index.upper - index.lower + 1)
            summed.remove(index)
    return Term(tuple(summed), factor)


def tidy_names(term: Term, model_indices, free=()) -> Term:
    """Renames primed summed indices back to a model index name where free.

    ``free`` are the result's own indices: taken even where the term does not
    read them (a gradient constant along an axis).
    """
    factor, summed = term.factor, []
    for index in term.summed:
        taken = {str(i.label) for i in factor.atoms(sp.Idx) if i != index}
        taken |= {str(i.label) for i in free}
        taken |= {str(i.label) for i in summed}
        candidates = [
            candidate
            for candidate in model_indices
            if (candidate.lower, candidate.upper) == (index.lower, index.upper)
            and str(candidate.label) not in taken
        ]
        base = str(index.label).rstrip("'")
        candidates.sort(key=lambda c: (str(c.label) != base, str(c.label)))
        if candidates and index not in model_indices:
            factor = factor.xreplace({index: candidates[0]})
            index = candidates[0]
        summed.append(index)
    return Term(tuple(summed), factor)


def merge_terms(terms: list[Term]) -> list[Term]:
    """Adds terms that share their summed indices and their summed part."""
    merged: dict = {}
    order = []
    for position, term in enumerate(terms):
        outside, inside = split_factor(term.factor, term.summed)
        if not term.summed:
            # Terms without a sum stay apart: each is one readable product.
            merged[position] = [(), term.factor, sp.S.One]
            order.append(position)
            continue
        key = (tuple(sorted(map(str, term.summed))), sp.srepr(inside))
        if key not in merged:
            merged[key] = [term.summed, inside, sp.S.Zero]
            order.append(key)
        merged[key][2] += outside
    result = []
    for key in order:
        summed, inside, outside = merged[key]
        outside = sp.factor_terms(outside)
        if outside != 0:
            result.append(Term(summed, outside * inside))
    return result


def _factor_sums(term: Term) -> Term:
    """Pulls common numbers out of each sum-free factor: 2*x - 2*m -> 2*(x - m)."""
    args = [
        sp.factor_terms(arg) if arg.is_Add else arg
        for arg in sp.Mul.make_args(term.factor)
    ]
    return Term(term.summed, sp.Mul(*args))


def simplify_terms(
    expr, fresh, model_indices, prefer=(), context="", identities=(), free=()
):
    """Normal form, delta elimination, definition identities, tidy names and
    merged like terms."""
    from derivations.identities import apply_identities

    terms = [eliminate_deltas(term, prefer, context) for term in normalize(expr, fresh)]
    terms = apply_identities(
        [t for t in terms if t.factor != 0], list(identities), context
    )
    terms = [_factor_sums(tidy_names(term, model_indices, free)) for term in terms]
    return merge_terms(terms)


def terms_to_expr(terms: list[Term]):
    return sp.Add(*(term.to_expr() for term in terms))

"""From a model to its Jacobians and its backward pass.

``derive_jacobian`` runs forward through the definitions: the Jacobian of each
intermediate with respect to one input or parameter, chained through the ones
before it, with Kronecker deltas, simplified.

``derive_backward`` runs the chain rule in reverse, definition by definition:
the adjoint ``grad_t`` of each intermediate ``t`` is a named tensor, so shared
subexpressions are computed once, and each step's vjp has its deltas
eliminated and its independent factors pulled out of its sums.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import sympy as sp

from derivations.calculus import (
    FreshIndices,
    Term,
    derivative,
    merge_terms,
    simplify_terms,
    terms_to_expr,
)
from derivations.errors import located
from derivations.identities import sum_definitions
from derivations.notation import (
    Definition,
    Maximum,
    Mode,
    Model,
    ModelError,
    Tensor,
    select_maximum,
)
from derivations.vanishing import sums_adjoints, vanishes


@dataclass
class Step:
    """One equality of a derivation, for the docs: ``lhs = rhs``."""

    title: str
    lhs: sp.Expr
    rhs: sp.Expr


@dataclass
class Adjoint:
    """``grad_<name>[indices] = sum of terms``: an adjoint of the backward pass.

    ``target`` is the tensor or definition whose gradient this is.
    """

    name: str
    base: sp.IndexedBase
    indices: tuple
    terms: list[Term]
    target: str
    steps: list[Step] = field(default_factory=list)

    @property
    def expression(self):
        return terms_to_expr(self.terms)


@dataclass
class Backward:
    """The backward pass of one mode: adjoints in the order they are computed."""

    model: Model
    mode: Mode
    output_grad: sp.IndexedBase
    adjoints: list[Adjoint]
    vanished: list[str] = field(default_factory=list)

    def gradient(self, tensor_name: str) -> Adjoint | None:
        for adjoint in self.adjoints:
            if adjoint.target == tensor_name:
                return adjoint
        return None


@dataclass
class Jacobian:
    """``d output[I] / d wrt[K]`` with Kronecker deltas."""

    output: Definition
    wrt: Tensor
    wrt_indices: tuple
    expression: sp.Expr
    intermediates: dict


def _read_names(expr) -> list[str]:
    return sorted({str(read.base.label) for read in expr.atoms(sp.Indexed)})


def check_model(model: Model, mode: Mode) -> None:
    """Raises ModelError for a definition that reads unknown names or whose free
    indices are not on its left-hand side."""
    known = {tensor.name for tensor in model.tensors}
    for definition in mode.definitions:
        context = f"definition {definition.name!r} of model {model.name}"
        for name in _read_names(definition.expression):
            if name not in known:
                raise ModelError(
                    f"{context} reads {name!r}, which is not defined before it"
                )
        maxima = definition.expression.atoms(Maximum)
        if maxima and not isinstance(definition.expression, Maximum):
            raise NotImplementedError(
                f"{context} uses a Maximum inside a larger expression; a Maximum "
                "must be the whole expression of its own definition"
            )
        bound = set()
        for reduction in definition.expression.atoms(sp.Sum, Maximum):
            bound |= {limit[0] for limit in reduction.limits}
        free = definition.expression.atoms(sp.Idx) - bound
        extra = free - set(definition.indices)
        if extra:
            names = ", ".join(sorted(map(str, extra)))
            raise ModelError(
                f"{context} uses indices {names} that are neither summed nor on "
                "its left-hand side"
            )
        unsupported = definition.expression.atoms(
            sp.Integral, sp.Product, sp.Derivative
        )
        if unsupported:
            kind = type(sorted(unsupported, key=str)[0]).__name__
            raise NotImplementedError(
                f"{context} uses {kind}, which the engine does not differentiate"
            )
        known.add(definition.name)


def _dependents(model: Model, mode: Mode) -> set[str]:
    """Names that depend on an input or a parameter."""
    names = {tensor.name for tensor in model.differentiable}
    for definition in mode.definitions:
        if set(_read_names(definition.expression)) & names:
            names.add(definition.name)
    return names


def _canonical_indices(model: Model, mode: Mode, name: str) -> tuple:
    for definition in mode.definitions:
        if definition.name == name:
            return definition.indices
    return model.tensor(name).indices


def _base_of(model: Model, mode: Mode, name: str) -> sp.IndexedBase:
    for definition in mode.definitions:
        if definition.name == name:
            return definition.base
    return model.tensor(name).base


def _instantiate_definition(definition: Definition, fresh: FreshIndices):
    """The definition's expression with fresh free and bound indices."""
    renamed = tuple(fresh.like(index) for index in definition.indices)
    if isinstance(definition.expression, Maximum):
        return renamed, select_maximum(definition, renamed)
    expr = fresh.rename_bound(definition.expression)
    return renamed, expr.xreplace(dict(zip(definition.indices, renamed, strict=True)))


def derive_backward(model: Model, mode_name: str) -> Backward:
    """The reverse-mode derivation of one mode of ``model``."""
    mode = model.modes[mode_name]
    check_model(model, mode)
    fresh = FreshIndices()
    dependents = _dependents(model, mode)
    output = mode.output
    output_grad = sp.IndexedBase("output_grad", shape=output.shape)
    adjoint_bases = {output.name: output_grad}
    if not output.indices:
        # A scalar output (a loss): its upstream gradient is a scalar symbol.
        adjoint_bases[output.name] = sp.Symbol("output_grad")
    contributions: dict[str, list[Term]] = {}
    steps: dict[str, list[Step]] = {}
    adjoints = []
    identities = sum_definitions(mode.definitions)
    # Formulas of the adjoints so far, to show that a later one is zero.
    known: dict[str, tuple] = {}
    vanished = []

    for definition in reversed(mode.definitions):
        context = f"definition {definition.name!r} of model {model.name}"
        if definition is not output:
            if not contributions.get(definition.name):
                continue
            adjoint = _make_adjoint(
                f"grad_{definition.name}",
                definition.indices,
                contributions[definition.name],
                definition.name,
                steps.get(definition.name, []),
            )
            if _is_zero(adjoint, known, fresh, model, identities, context):
                # Nothing flows back through it: the output does not depend on it.
                vanished.append(adjoint.name)
                continue
            adjoints.append(adjoint)
            known[adjoint.name] = (adjoint.indices, adjoint.expression)
            adjoint_bases[definition.name] = adjoint.base
        grad = adjoint_bases[definition.name]
        with located(context):
            indices, expr = _instantiate_definition(definition, fresh)
        upstream = grad[indices] if indices else grad
        with located(context):
            for name in _read_names(expr):
                if name not in dependents:
                    continue
                target = _canonical_indices(model, mode, name)
                local = derivative(expr, _base_of(model, mode, name), target, fresh)
                chained = upstream * local
                if indices:
                    chained = sp.Sum(chained, *((i, i.lower, i.upper) for i in indices))
                terms = simplify_terms(
                    chained,
                    fresh,
                    model.indices,
                    prefer=indices,
                    context=context,
                    identities=identities,
                    free=target,
                )
                contributions.setdefault(name, []).extend(terms)
                lhs = sp.Symbol(rf"\overline{{{name}}}") if not target else None
                steps.setdefault(name, []).append(
                    Step(
                        f"through {definition.name}",
                        lhs if lhs is not None else _adjoint_read(name, target),
                        chained,
                    )
                )
                steps[name].append(
                    Step(
                        f"through {definition.name}, deltas eliminated",
                        _adjoint_read(name, target),
                        terms_to_expr(terms),
                    )
                )

    for tensor in model.differentiable:
        if not contributions.get(tensor.name):
            continue
        name = "input_grad" if tensor.role == "input" else f"grad_{tensor.name}"
        adjoint = _make_adjoint(
            name,
            tensor.indices,
            contributions[tensor.name],
            tensor.name,
            steps.get(tensor.name, []),
        )
        context = f"gradient of {tensor.name!r} of model {model.name}"
        if _is_zero(adjoint, known, fresh, model, identities, context):
            vanished.append(adjoint.name)
            continue
        adjoints.append(adjoint)
    return Backward(model, mode, output_grad, adjoints, vanished)


def _is_zero(adjoint, known, fresh, model, identities, context) -> bool:
    """Whether ``adjoint`` is identically zero; tried only where it sums over
    another adjoint, which is where an invariance of the output shows."""
    if not sums_adjoints(adjoint.terms, known):
        return False
    with located(context):
        return vanishes(
            adjoint.terms,
            known,
            fresh,
            model.indices,
            identities=identities,
            free=adjoint.indices,
            context=context,
        )


def _adjoint_read(name, indices):
    base = sp.IndexedBase(f"grad_{name}")
    return base[indices] if indices else sp.Symbol(f"grad_{name}")


def _make_adjoint(name, indices, terms, target, steps) -> Adjoint:
    shape = tuple(index.upper + 1 for index in indices)
    base = sp.IndexedBase(name, shape=shape)
    merged = merge_terms(terms)
    return Adjoint(name, base, tuple(indices), merged, target, list(steps))


def derive_jacobian(model: Model, mode_name: str, wrt_name: str) -> Jacobian:
    """``d output / d wrt`` of one mode, chained forward through the definitions.

    The derivative's own indices are primed copies of the tensor's indices.
    """
    mode = model.modes[mode_name]
    check_model(model, mode)
    fresh = FreshIndices()
    wrt = model.tensor(wrt_name)
    wrt_indices = tuple(fresh.like(index) for index in wrt.indices)
    known: dict = {}
    identities = sum_definitions(mode.definitions)
    for definition in mode.definitions:
        context = f"definition {definition.name!r} of model {model.name}"
        expression = definition.expression
        if isinstance(expression, Maximum):
            expression = select_maximum(definition, definition.indices)
        with located(context):
            local = derivative(expression, wrt.base, wrt_indices, fresh, known)
            terms = simplify_terms(
                local,
                fresh,
                model.indices,
                context=context,
                identities=identities,
                free=definition.indices + wrt_indices,
            )
        known[definition.name] = (definition.indices, terms_to_expr(terms))
    expression = known[mode.output.name][1]
    intermediates = {name: value[1] for name, value in known.items()}
    return Jacobian(mode.output, wrt, wrt_indices, expression, intermediates)

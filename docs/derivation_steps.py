"""The equalities a derivation page shows, as LaTeX, from the derivation objects.

The engine records two steps for each path from an intermediate to a tensor
(``derivations.derive.Step``): the chain rule with its Kronecker deltas, and the
simplified result. Between them this module replays, with the engine's own
public functions, what the simplification did, so that each move is shown on
its own line: products expanded with the sums outermost, the deltas
eliminated, sums read back as the intermediates they define, and like terms
merged. Nothing here derives anything the engine did not.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derivations import derive_jacobian
from derivations.calculus import (
    FreshIndices,
    derivative,
    eliminate_deltas,
    normalize,
    terms_to_expr,
)
from derivations.derive import Adjoint, Backward
from derivations.identities import apply_identities, sum_definitions
from derivations.latex import IndexNotationPrinter, read
from derivations.notation import Mode, Model


@dataclass(frozen=True)
class Equation:
    """One displayed line: ``tex`` under a short ``title`` (may be empty)."""

    title: str
    tex: str


def printer_for(model: Model, mode: Mode) -> IndexNotationPrinter:
    """The printer of one mode of ``model``: it knows the output and input names."""
    return IndexNotationPrinter(mode.output.name, model.input_tensor.name)


def forward_equations(model: Model, mode: Mode) -> list[Equation]:
    """The definitions of ``mode`` in order, then its state updates."""
    printer = printer_for(model, mode)
    equations = [
        Equation(
            f"`{definition.name}`",
            f"{read(printer, definition.name, definition.indices)} = "
            f"{printer.doprint(definition.expression)}",
        )
        for definition in mode.definitions
    ]
    for update in mode.updates:
        equations.append(
            Equation(
                f"`{update.state.name}`, updated after the pass",
                f"{read(printer, update.state.name, update.indices)} \\leftarrow "
                f"{printer.doprint(update.expression)}",
            )
        )
    return equations


def identity_equations(model: Model, mode: Mode) -> list[Equation]:
    """The sums that the definitions of ``mode`` name, read as identities."""
    printer = printer_for(model, mode)
    equations = []
    for identity in sum_definitions(mode.definitions):
        limits = [(index, index.lower, index.upper) for index in identity.summed]
        total = sp.Sum(identity.body, *limits)
        if identity.indices:
            named = identity.base[identity.indices]
        else:
            named = sp.Symbol(str(identity.base.label))
        scaled = printer.doprint(named / identity.scale)
        equations.append(Equation("", f"{printer.doprint(total)} = {scaled}"))
    return equations


def _fresh_beside(*exprs) -> FreshIndices:
    """Fresh index names that clash with no index of ``exprs``."""
    fresh = FreshIndices()
    for expr in exprs:
        fresh.used |= {str(index.label) for index in sp.sympify(expr).atoms(sp.Idx)}
    return fresh


def _partial(printer, numerator: str, denominator: str) -> str:
    return rf"\frac{{\partial {numerator}}}{{\partial {denominator}}}"


def jacobian_equations(model: Model, mode: Mode, wrt_name: str) -> list[Equation]:
    """``d t / d wrt`` for each definition ``t`` that depends on ``wrt``.

    Each definition is shown twice when the two differ: differentiated as
    written (reads of earlier intermediates replaced by their Jacobians), then
    as the engine simplifies it.
    """
    printer = printer_for(model, mode)
    jacobian = derive_jacobian(model, mode.name, wrt_name)
    wrt = model.tensor(wrt_name)
    denominator = read(printer, wrt_name, jacobian.wrt_indices)
    fresh = _fresh_beside(jacobian.expression, *jacobian.wrt_indices)
    fresh.used |= {str(index.label) for index in model.indices}
    known = {}
    equations = []
    for definition in mode.definitions:
        simplified = jacobian.intermediates[definition.name]
        try:
            raw = derivative(
                definition.expression, wrt.base, jacobian.wrt_indices, fresh, known
            )
        except NotImplementedError:
            # The engine rewrites some constructs (a Maximum) before it
            # differentiates them; for those only its own result is shown.
            raw = simplified
        known[definition.name] = (definition.indices, simplified)
        if raw == 0 and simplified == 0:
            continue
        numerator = read(printer, definition.name, definition.indices)
        lhs = _partial(printer, numerator, denominator)
        raw_tex, simplified_tex = printer.doprint(raw), printer.doprint(simplified)
        equations.append(Equation(f"of `{definition.name}`", f"{lhs} = {raw_tex}"))
        if raw_tex != simplified_tex:
            equations.append(Equation("simplified", f"{lhs} = {simplified_tex}"))
    return equations


def path_read(printer: IndexNotationPrinter, adjoint: Adjoint, through: str) -> str:
    """The part of ``adjoint`` that flows through ``through``, as LaTeX."""
    name = printer.tensor_name(adjoint.name)
    label = printer.tensor_name(through)
    subscript = ",".join(printer.doprint(index) for index in adjoint.indices)
    tex = rf"{name}^{{({label})}}"
    return f"{tex}_{{{subscript}}}" if subscript else tex


def _through(step, mode: Mode):
    """The definition an engine step ``through <name>`` runs through."""
    name = step.title.removeprefix("through ").split(",")[0].strip()
    for definition in mode.definitions:
        if definition.name == name:
            return definition
    raise ValueError(
        f"the derivation step {step.title!r} names no definition of mode "
        f"{mode.name!r}; expected 'through <definition>'"
    )


def _outer_indices(chained) -> tuple:
    """The indices of the intermediate a chain-rule step runs through."""
    if isinstance(chained, sp.Sum):
        return tuple(limit[0] for limit in chained.limits)
    return ()


def contribution_equations(
    model: Model, mode: Mode, adjoint: Adjoint, chain, result
) -> list[Equation]:
    """The steps of one path into ``adjoint``, from ``chain`` to ``result``.

    Args:
        model: the model.
        mode: the mode being differentiated.
        adjoint: the adjoint the path contributes to.
        chain: the engine's chain-rule step (``Step``) of the path.
        result: the engine's simplified step of the same path.
    """
    printer = printer_for(model, mode)
    definition = _through(chain, mode)
    through = definition.name
    lhs = path_read(printer, adjoint, through)
    outer = _outer_indices(chain.rhs)
    upstream = read(printer, f"grad_{through}", outer)
    if definition is mode.output:
        upstream = read(printer, "output_grad", outer)
    target = read(printer, adjoint.target, adjoint.indices)
    local = _partial(printer, read(printer, through, outer), target)
    sum_sign = (
        rf"\sum_{{{', '.join(printer.doprint(i) for i in outer)}}} " if outer else ""
    )
    chain_tex = printer.doprint(chain.rhs)
    equations = [
        Equation(
            f"chain rule through `{through}`",
            f"{lhs} = {sum_sign}{upstream} {local} = {chain_tex}",
        )
    ]

    shown = [chain_tex]
    moves = _replay(model, mode, chain.rhs, outer, through)
    moves.append(("indices renamed, like terms merged, factors pulled out", result.rhs))
    for title, expr in moves:
        tex = printer.doprint(expr)
        if tex not in shown:
            equations.append(Equation(title, f"{lhs} = {tex}"))
            shown.append(tex)
    return equations


def _replay(model: Model, mode: Mode, chained, outer, through: str) -> list:
    """The simplification of one chain-rule step, one move at a time, as the
    engine makes it: ``[(title, expression), ...]``."""
    context = f"definition {through!r} of model {model.name}"
    fresh = _fresh_beside(chained)
    try:
        terms = normalize(chained, fresh)
        eliminated = [eliminate_deltas(term, outer, context) for term in terms]
        eliminated = [term for term in eliminated if term.factor != 0]
        identities = sum_definitions(mode.definitions)
        applied = apply_identities(eliminated, list(identities), context)
    except NotImplementedError:
        # A construct the engine handles before these moves (a Maximum): the
        # page shows the engine's chain rule and its result only.
        return []
    return [
        ("products expanded, sums outermost", terms_to_expr(terms)),
        ("Kronecker deltas eliminated", terms_to_expr(eliminated)),
        ("sums read back as the intermediates they define", terms_to_expr(applied)),
    ]


def adjoint_equations(model: Model, backward: Backward, adjoint: Adjoint):
    """Every step of one adjoint: each path, their sum, and the final formula.

    Returns:
        ``(paths, total)``: a list of equation lists, one per path through an
        intermediate, and the equations that add the paths up (the last one is
        the formula the code computes).
    """
    mode = backward.mode
    printer = printer_for(model, mode)
    lhs = read(printer, adjoint.name, adjoint.indices)
    steps = adjoint.steps
    pairs = list(zip(steps[0::2], steps[1::2], strict=True))
    paths = [
        contribution_equations(model, mode, adjoint, chain, result)
        for chain, result in pairs
    ]
    total = []
    final = printer.doprint(adjoint.expression)
    if len(pairs) > 1:
        named = " + ".join(
            path_read(printer, adjoint, _through(chain, mode).name)
            for chain, _ in pairs
        )
        added = sp.Add(*(result.rhs for _, result in pairs))
        total.append(
            Equation("the paths added", f"{lhs} = {named} = {printer.doprint(added)}")
        )
    total.append(Equation("result", f"{lhs} = {final}"))
    return paths, total


def readers(backward: Backward, adjoint: Adjoint) -> list[str]:
    """The other adjoints that read ``adjoint``: it is computed once for them."""
    names = []
    for later in backward.adjoints:
        reads = {str(r.base.label) for r in later.expression.atoms(sp.Indexed)}
        reads |= {str(s) for s in later.expression.atoms(sp.Symbol)}
        if adjoint.name in reads and later is not adjoint:
            names.append(later.name)
    return names

"""The generated pages of the docs site: one derivation page per catalog layer,
the catalog's index and one page per generated module.

The pages are Markdown with ``$...$`` and ``$$...$$`` math (rendered to MathML by
``latex_to_mathml``). They are made at build time by the MkDocs hook
(``docs/hooks.py``) from the same models and derivation objects that
``python -m codegen`` writes the layers from, so a page cannot describe a
derivation other than the one the code was generated from.
"""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import sympy as sp
from derivation_steps import (
    Equation,
    adjoint_equations,
    forward_equations,
    identity_equations,
    jacobian_equations,
    printer_for,
    readers,
)

import layers.reference
from codegen.emit_module import COMMAND, Emitted, emit_module
from derivations import derive_backward
from derivations.latex import read
from derivations.models import CATALOG, build
from derivations.notation import Model

DERIVATIONS = "derivations"
MODULES = "modules"
MODE_TITLES = {"train": "Training", "evaluate": "Evaluation"}
ROLES = {
    "input": "input",
    "parameter": "parameter",
    "state": "state (moving statistics)",
    "random": "random keep mask, drawn in a training forward pass",
    "target": "target",
}


def derivation_path(name: str) -> str:
    """The docs path of the derivation page of catalog layer ``name``."""
    return f"{DERIVATIONS}/{name}.md"


def module_path(name: str) -> str:
    """The docs path of the page that shows generated module ``name``."""
    return f"{MODULES}/{name}.md"


def nav_entries() -> tuple[list, list]:
    """The nav children of the layer catalog and of the generated modules."""
    layers = [f"{DERIVATIONS}/index.md"]
    modules = []
    for name in CATALOG:
        title = build(name).name
        layers.append({title: derivation_path(name)})
        modules.append({f"{name}.py": module_path(name)})
    return layers, modules


def site_pages() -> dict[str, str]:
    """Every generated page, as ``{path under docs/: Markdown}``."""
    models = {name: build(name) for name in CATALOG}
    pages = {f"{DERIVATIONS}/index.md": catalog_index(models)}
    for name, model in models.items():
        emitted = emit_module(model, name)
        pages[derivation_path(name)] = derivation_page(name, model, emitted)
        pages[module_path(name)] = module_page(name, model, emitted)
    return pages


# Markdown pieces.


def _display(equation: Equation) -> str:
    """A titled display equation; blank lines keep ``$$`` blocks apart."""
    title = (
        f"{equation.title[0].upper()}{equation.title[1:]}:\n\n"
        if equation.title
        else ""
    )
    return f"{title}$$\n{equation.tex}\n$$\n"


def _displays(equations) -> str:
    return "\n".join(_display(equation) for equation in equations)


def _code(text: str, language: str = "python") -> str:
    return f"```{language}\n{text.rstrip()}\n```\n"


def _mode_groups(model: Model) -> list[list[str]]:
    """Modes with the same definitions and updates share one section."""
    groups: dict[str, list[str]] = {}
    for mode_name, mode in model.modes.items():
        definitions = [(d.name, d.indices, d.expression) for d in mode.definitions]
        updates = [(u.state.name, u.expression) for u in mode.updates]
        key = sp.srepr(sp.Tuple(*map(sp.Tuple, definitions), *map(sp.Tuple, updates)))
        groups.setdefault(key, []).append(mode_name)
    return list(groups.values())


def _mode_title(group: list[str]) -> str:
    if set(group) == set(MODE_TITLES):
        return "Training and evaluation"
    if len(group) == 1:
        return MODE_TITLES.get(group[0], f"Mode `{group[0]}`")
    return "Modes " + ", ".join(f"`{mode}`" for mode in group)


# The notation of one model.


def _notation(model: Model, emitted: Emitted) -> str:
    letters = dict(emitted.letters)
    printer = printer_for(model, next(iter(model.modes.values())))
    lines = ["## Notation", ""]
    lines += ["| index | runs over | einsum letter |", "|---|---|---|"]
    for index in model.indices:
        letter = letters.get(str(index.label), "")
        letter = f"`{letter}`" if letter else "not in the code"
        size = printer.doprint(index.upper + 1)
        lines.append(
            f"| ${printer.doprint(index)}$ | $0, \\dots, {size} - 1$ | {letter} |"
        )
    lines += ["", "| tensor | role | in the code |", "|---|---|---|"]
    for tensor in model.tensors:
        role = ROLES.get(tensor.role, tensor.role)
        code = f"`{tensor.attribute}`" if tensor.attribute else "`input` of `forward`"
        if tensor.grad_attribute:
            code += f", gradient `{tensor.grad_attribute}`"
        lines.append(
            f"| ${read(printer, tensor.name, tensor.indices)}$ | {role} | {code} |"
        )
    if model.constants:
        lines += ["", "| constant | default | given as |", "|---|---|---|"]
        for constant in model.constants:
            kind = (
                "class attribute"
                if constant.kind == "class_attribute"
                else "constructor argument"
            )
            default = (
                "required" if constant.default is None else f"`{constant.default!r}`"
            )
            lines.append(
                f"| ${printer.doprint(constant.symbol)}$ | {default} | {kind} |"
            )
    output = model.modes[next(iter(model.modes))].output.name
    lines += [
        "",
        "Every sum runs over the whole range of its indices, and a read outside a "
        "tensor's range is zero (that is how zero padding is written). The adjoint "
        "of $t$ is $\\overline{t}$, the gradient of the loss with respect to $t$: "
        f"${printer.tensor_name('output_grad')}$ is `output_grad`, the upstream "
        f"gradient of the output `{output}` that the backward pass receives; "
        f"${printer.tensor_name('input_grad')}$ is `input_grad`, what it returns; "
        "$\\overline{t}$ of any other $t$ is `grad_t` in the code. A primed index "
        "($b'$) is a second copy of the index it is named after.",
        "",
    ]
    return "\n".join(lines)


# The generated code of a backward pass.


def _method_source(text: str, method: str) -> str:
    """The source of ``method`` in the generated module's ``text``."""
    match = re.search(
        rf"^    def {re.escape(method)}\(.*?(?=^    def |\Z)", text, re.M | re.S
    )
    return textwrap.dedent(match.group(0)).rstrip() if match else ""


def _chunks(lines: list[str], model: Model, mode_name: str, adjoints) -> dict:
    """Splits a backward function's lines at the assignment of each adjoint.

    Returns ``{adjoint name: lines}`` plus ``"forward"`` for the forward
    intermediates recomputed first.
    """
    chunks, current = {}, []
    pending = list(adjoints)
    for line in lines:
        current.append(line)
        if pending and re.match(rf"{re.escape(pending[0].name)}_* = ", line):
            chunks[pending.pop(0).name] = current
            current = []
    definitions = [d.name for d in model.modes[mode_name].definitions]
    first = chunks.get(adjoints[0].name, []) if adjoints else []
    last_forward = max(
        (
            position
            for position, line in enumerate(first)
            if any(re.match(rf"{re.escape(name)}_* = ", line) for name in definitions)
        ),
        default=-1,
    )
    if adjoints and last_forward >= 0:
        chunks["forward"] = first[: last_forward + 1]
        chunks[adjoints[0].name] = first[last_forward + 1 :]
    return chunks


def _einsum_table(lines: list[str], letters: dict) -> str:
    """One row per ``np.einsum`` of ``lines``: subscripts in index names, path, cost."""
    rows = []
    cost = ""
    for line in lines:
        comment = re.match(r"# path cost at example sizes: (.*)", line)
        if comment:
            cost = comment.group(1)
            continue
        call = re.match(r"(\w+) = np\.einsum\('([^']*)'", line)
        if not call:
            continue
        target, subscripts = call.groups()
        inputs, output = subscripts.split("->")
        named = [
            " ".join(letters.get(ch, ch) for ch in part) for part in inputs.split(",")
        ]
        named_output = " ".join(letters.get(ch, ch) for ch in output) or "(scalar)"
        path = re.search(r"optimize=\['einsum_path', (.*)\]\)", line)
        path = f"`{path.group(1)}`" if path else "one step, none written"
        rows.append(
            f"| `{target}` | `{subscripts}` | {', '.join(named)} → {named_output} | "
            f"{path} | {cost or '-'} |"
        )
        cost = ""
    if not rows:
        return ""
    header = [
        "| array | einsum | over the indices | contraction path | cost at the "
        "example sizes |",
        "|---|---|---|---|---|",
    ]
    return "\n".join(header + rows) + "\n"


def _example_sizes(model: Model) -> str:
    sizes = ", ".join(
        f"{size} = {value}" for size, value in model.example_sizes.items()
    )
    return (
        f"Contraction paths were chosen by `opt_einsum` when the module was "
        f"generated, at the model's example sizes ({sizes}), and are written into "
        "the code, so NumPy does not search for one at run time."
    )


# The page of one layer.


def _jacobian_section(model: Model, mode_name: str) -> str:
    mode = model.modes[mode_name]
    parts = ["### Jacobians", ""]
    parts.append(
        "The derivative of each definition with respect to each input and "
        "parameter, chained forward through the intermediates, with Kronecker "
        "deltas: first as the chain rule gives it, then simplified.\n"
    )
    for tensor in model.differentiable:
        equations = jacobian_equations(model, mode, tensor.name)
        parts.append(f"#### With respect to `{tensor.name}` ({tensor.role})\n")
        parts.append(_displays(equations))
    return "\n".join(parts)


def _backward_section(model: Model, mode_name: str, emitted: Emitted) -> str:
    backward = emitted.backwards.get(mode_name) or derive_backward(model, mode_name)
    lines = emitted.functions.get(f"backward {mode_name}", [])
    letters = dict((letter, name) for name, letter in emitted.letters)
    chunks = _chunks(lines, model, mode_name, backward.adjoints)
    mode = model.modes[mode_name]
    parts = ["### Backward pass (vector-Jacobian products)", ""]
    parts.append(
        "The chain rule runs through the definitions in reverse. Each adjoint is "
        "named once and computed once; a path into it from an intermediate is "
        "written with that intermediate as a superscript, and the paths add up.\n"
    )
    identities = identity_equations(model, mode)
    if identities:
        parts.append(
            "The definitions name these sums; a sum of the same shape in a "
            "derivation is read back as the intermediate (that is how the centred "
            "sum of a normalization vanishes):\n"
        )
        parts.append(_displays(identities))
    if backward.vanished:
        names = ", ".join(f"`{name}`" for name in backward.vanished)
        parts.append(
            f"Dropped as identically zero: {names}. Substituting the adjoints it "
            "reads and applying the identities gives exactly 0: the output does "
            "not change with that intermediate, so nothing flows back through "
            "it.\n"
        )
    if mode.kept:
        names = ", ".join(f"`{name}`" for name in mode.kept)
        parts.append(
            f"The forward pass keeps {names}; a backward pass on the same input "
            "object reads them instead of computing them again.\n"
        )
    if chunks.get("forward"):
        parts.append("The backward pass first recomputes the forward intermediates:\n")
        parts.append(_code("\n".join(chunks["forward"])))
    for adjoint in backward.adjoints:
        parts.append(f"#### `{adjoint.name}`\n")
        later = readers(backward, adjoint)
        if later:
            names = ", ".join(f"`{name}`" for name in later)
            parts.append(f"Computed once here and read by {names}.\n")
        paths, total = adjoint_equations(model, backward, adjoint)
        for path in paths:
            parts.append(_displays(path))
        parts.append(_displays(total))
        code = chunks.get(adjoint.name)
        if code:
            parts.append("Generated NumPy:\n")
            parts.append(_code("\n".join(code)))
            table = _einsum_table(code, letters)
            if table:
                parts.append(table)
    method = _method_source(emitted.text, f"_backward_{mode_name}")
    if method:
        parts.append("#### The whole generated method\n")
        parts.append(_code(method))
        if "einsum_path" in method:
            parts.append(_example_sizes(model) + "\n")
    return "\n".join(parts)


def _verification(name: str, model: Model) -> str:
    reference = hasattr(layers.reference, model.name)
    if reference:
        oracle = (
            f"the generated `{model.name}` agrees with the handwritten "
            f"`layers.reference.{model.name}`, and its gradients"
        )
    else:
        oracle = (
            f"`layers/reference/` has no handwritten `{model.name}`; the "
            "gradients of the generated layer"
        )
    return textwrap.dedent(
        f"""\
        ## How it is verified

        The test suite checks the generated layers in these independent ways
        (each test file lists the layers and sizes it covers):

        - **Finite differences** (`tests/test_generated_layers.py`): {oracle}
          agree with central finite differences of the forward pass
          (`layers.gradcheck`), in float64, for the input and every parameter,
          with a **random** `output_grad` (an all-ones upstream gradient lets a
          wrong formula pass), in every mode.
        - **Jacobians** (`tests/test_jacobians.py`): at sizes small enough to
          list every entry, the engine's Jacobian with Kronecker deltas equals
          the Jacobian SymPy computes from the explicit scalar formulas.
        - **PyTorch** (`tests/test_generated_vs_torch.py`): when PyTorch is
          installed, forward and backward agree with `torch.autograd`;
          otherwise these tests are skipped and say why.
        - **Up to date** (`tests/test_codegen.py`): the committed
          `layers/generated/{name}.py` is byte for byte what `{COMMAND}` writes
          from the model now, so this page and the code come from the same
          derivation.
        """
    )


def derivation_page(name: str, model: Model, emitted: Emitted) -> str:
    """The derivation page of catalog layer ``name``."""
    parts = [
        f"# {model.name}\n",
        f"{model.summary}\n",
        f"Model: `{model.source}` · generated module: "
        f"[`layers/generated/{name}.py`](../{module_path(name)}) · rebuild with "
        f"`{COMMAND} {name}`\n",
        _notation(model, emitted),
    ]
    for group in _mode_groups(model):
        mode_name = group[0]
        mode = model.modes[mode_name]
        parts.append(f"## {_mode_title(group)}\n")
        parts.append("### Forward\n")
        parts.append(_displays(forward_equations(model, mode)))
        if any(t.role in ("input", "parameter") for t in model.tensors):
            parts.append(_jacobian_section(model, mode_name))
        parts.append(_backward_section(model, mode_name, emitted))
    parts.append(_verification(name, model))
    return "\n".join(parts)


# The catalog and the modules.


def catalog_index(models: dict[str, Model]) -> str:
    """The table of every layer of the catalog."""
    lines = [
        "# Layer catalog",
        "",
        "Every layer the library generates. The layer's name leads to the page that "
        "derives its backward pass step by step, the module's name to the code "
        "`python -m codegen` writes for it. The pages are built from the models "
        "each time the site is built.",
        "",
        "| layer | what it computes | modes | generated module | model in |",
        "|---|---|---|---|---|",
    ]
    for name, model in models.items():
        modes = ", ".join(model.modes)
        lines.append(
            f"| [{model.name}]({name}.md) | {model.summary} | {modes} | "
            f"[`{name}.py`](../{module_path(name)}) | "
            f"`{Path(model.source).name}` |"
        )
    return "\n".join(lines) + "\n"


def module_page(name: str, model: Model, emitted: Emitted) -> str:
    """The generated module of ``name``, as ``python -m codegen`` writes it."""
    return (
        f"# layers/generated/{name}.py\n\n"
        f"The module `{COMMAND} {name}` writes for `{model.name}` "
        f"([derivation](../{derivation_path(name)})); the committed file is the "
        "same text, or a test fails.\n\n" + _code(emitted.text)
    )

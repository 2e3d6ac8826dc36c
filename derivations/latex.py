"""LaTeX for the index notation of the models, as the derivation pages show it.

SymPy's own LaTeX printer writes ``Sum`` with every range in a ``\\substack``,
splits names at underscores into subscripts and knows nothing of adjoints. This
printer writes the notation of a hand derivation instead:

- a read ``x[b, n]`` is ``x_{b,n}``; a name longer than one letter is upright
  (``\\mathrm{mean}_{n}``), a Greek name is its letter (``\\gamma_{n}``);
- every sum runs over the whole range of its indices (the engine refuses any
  other), so ``sum_{b=0}^{B-1}`` is written ``\\sum_{b}``;
- the adjoint of ``t``, ``grad_t`` in the generated code, is ``\\overline{t}``:
  ``output_grad`` is the adjoint of the layer's output and ``input_grad`` the
  adjoint of its input;
- a Kronecker delta is ``\\delta_{b b'}``.
"""

from __future__ import annotations

import re

import sympy as sp
from sympy.printing.latex import LatexPrinter, translate


def _upright(name: str) -> str:
    """A name as an upright identifier, or its Greek letter."""
    translated = translate(name)
    if translated != name or len(name) == 1:
        return translated
    return r"\mathrm{" + name.replace("_", r"\_") + "}"


class IndexNotationPrinter(LatexPrinter):
    """Prints the expressions of one model's derivation.

    Args:
        output: the name of the layer's output (the last definition).
        input: the name of the layer's input tensor.
    """

    def __init__(self, output: str = "y", input: str = "x"):
        super().__init__({"fold_short_frac": False})
        self.output = output
        self.input = input

    def tensor_name(self, name: str) -> str:
        """The LaTeX of a tensor, an intermediate or an adjoint, by its name."""
        if name == "output_grad":
            return rf"\overline{{{_upright(self.output)}}}"
        if name == "input_grad":
            return rf"\overline{{{_upright(self.input)}}}"
        if name.startswith("grad_"):
            return rf"\overline{{{_upright(name[len('grad_') :])}}}"
        return _upright(name)

    def _as_ordered_terms(self, expr, order=None):
        # x - mean, as a hand derivation writes it, not -mean + x.
        terms = super()._as_ordered_terms(expr, order=order)
        if not expr.is_Add:
            return terms
        return sorted(terms, key=lambda term: term.could_extract_minus_sign())

    def _print_Indexed(self, expr):
        name = self.tensor_name(str(expr.base.label))
        indices = ",".join(self._print(index) for index in expr.indices)
        return f"{name}_{{{indices}}}"

    def _print_IndexedBase(self, expr):
        return self.tensor_name(str(expr.label))

    def _print_Idx(self, expr):
        return self._index_name(str(expr.label))

    def _index_name(self, name: str) -> str:
        base = name.rstrip("'")
        primes = name[len(base) :]
        if len(base) > 1:
            base = r"\mathit{" + base + "}"
        return base + primes

    def _print_Symbol(self, expr, style="plain"):
        name = expr.name
        # The engine names the adjoint of a scalar intermediate in LaTeX already.
        adjoint = re.fullmatch(r"\\overline\{(\w+)\}", name)
        if adjoint:
            return rf"\overline{{{_upright(adjoint.group(1))}}}"
        if name.startswith("\\"):
            return name
        if name in ("output_grad", "input_grad") or name.startswith("grad_"):
            return self.tensor_name(name)
        if name.rstrip("'") != name:
            return self._index_name(name)
        return _upright(name)

    def _print_Sum(self, expr):
        indices = ", ".join(self._print(limit[0]) for limit in expr.limits)
        body = self._print(expr.function)
        if expr.function.is_Add or body.startswith("-"):
            body = rf"\left({body}\right)"
        return rf"\sum_{{{indices}}} {body}"

    def _print_KroneckerDelta(self, expr, exp=None):
        first, second = (self._print(arg) for arg in expr.args)
        simple = all(isinstance(arg, (sp.Idx, sp.Symbol)) for arg in expr.args)
        subscript = f"{first} {second}" if simple else rf"{first},\,{second}"
        tex = rf"\delta_{{{subscript}}}"
        if exp is not None:
            tex = rf"\left({tex}\right)^{{{exp}}}"
        return tex


def read(printer: IndexNotationPrinter, name: str, indices) -> str:
    """The LaTeX of the read ``name[indices]``; a bare name for a scalar."""
    if not indices:
        return printer.tensor_name(name)
    subscript = ",".join(printer._print(index) for index in indices)
    return f"{printer.tensor_name(name)}_{{{subscript}}}"


def to_latex(expr, model=None, mode="train") -> str:
    """LaTeX for a definition, a Jacobian or a vjp, in the derivation pages'
    notation; ``model`` names the output and input for the adjoint bars."""
    output = model.modes[mode].output.name if model is not None else "y"
    input_name = model.input_tensor.name if model is not None else "x"
    return IndexNotationPrinter(output, input_name).doprint(expr)

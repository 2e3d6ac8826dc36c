"""Lowering: from index expressions to NumPy statements.

A sum of terms becomes, for each term, one ``np.einsum`` over the arrays its
summed part reads (with the contraction path chosen here, at generation time,
at the model's example sizes) times an elementwise NumPy expression of the rest.
A read at shifted indices becomes ``np.pad`` plus ``sliding_window_view`` and a
slice; a read at a reversed index becomes a reversed slice, which is how the
flipped kernel of a convolution's input gradient appears.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import opt_einsum
import sympy as sp
from sympy.codegen.cfunctions import log1p
from sympy.printing.numpy import NumPyPrinter
from sympy.printing.pycode import PythonCodePrinter

from codegen.inplace import InPlace
from codegen.inplace import plan as plan_in_place
from codegen.lower_windows import economical, emit_correlation, plan_correlation
from codegen.names import Letters, Names
from derivations.affine import InRange, affine_parts, value_range
from derivations.calculus import FreshIndices, Term, normalize, split_factor


class _ArrayPrinter(NumPyPrinter):
    """NumPy printer that writes ``np.`` and lowers Piecewise to ``np.where``."""

    def __init__(self):
        super().__init__({"fully_qualified_modules": True})

    def doprint(self, expr, assign_to=None):
        return super().doprint(expr, assign_to).replace("numpy.", "np.")

    def _print_Piecewise(self, expr):
        *pieces, (last, condition) = expr.args
        if condition != sp.true:
            raise NotImplementedError(f"a Piecewise without a default branch: {expr}")
        if len(pieces) == 1 and (last == 0) != (pieces[0][0] == 0):
            # One value and zero: a product by the condition, no branches.
            value, cond = pieces[0]
            condition = self._print(cond)
            if value == 0:
                value, condition = last, f"np.logical_not({condition})"
            return f"select_or_zero({condition}, {self._branch(value)})"
        code = self._branch(last)
        for value, cond in reversed(pieces):
            code = f"np.where({self._print(cond)}, {self._branch(value)}, {code})"
        return code

    def _branch(self, value) -> str:
        # np.where of Python numbers gives float64: a number takes the pass's
        # dtype, so that float32 stays float32.
        if value.is_Number:
            return f"dtype.type({self._print(value)})"
        return self._print(value)

    def _print_And(self, expr):
        # Pairwise, so that conditions of different (broadcast) shapes combine.
        args = sorted(expr.args, key=sp.srepr)
        code = self._print(args[0])
        for arg in args[1:]:
            code = f"np.logical_and({code}, {self._print(arg)})"
        return code

    def _print_Max(self, expr):
        code = self._print(expr.args[0])
        for arg in expr.args[1:]:
            code = f"np.maximum({code}, {self._print(arg)})"
        return code

    def _print_Min(self, expr):
        code = self._print(expr.args[0])
        for arg in expr.args[1:]:
            code = f"np.minimum({code}, {self._print(arg)})"
        return code

    def _print_KroneckerDelta(self, expr):
        raise NotImplementedError(
            f"a Kronecker delta left between free indices: {expr}"
        )

    def _print_InRange(self, expr):
        raise NotImplementedError(
            f"a range bracket that no zero-padded read absorbs: {expr}"
        )


class _ScalarPrinter(PythonCodePrinter):
    """Plain Python for scalar expressions of sizes and constants."""

    def _print_Max(self, expr):
        return "max(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Min(self, expr):
        return "min(" + ", ".join(self._print(a) for a in expr.args) + ")"


def _blas_applies(inputs, target) -> bool:
    """True when a two-operand contraction maps onto one matrix product."""
    left, right = (set(letters) for letters in inputs)
    contracted = (left & right) - set(target)
    return bool(contracted) and not (left & right & set(target))


@dataclass(frozen=True)
class Operand:
    """An array in scope: its code and the index of each of its axes."""

    code: str
    indices: tuple


class Lowerer:
    """Emits the statements of one generated function.

    Args:
        names: identifiers of the module.
        letters: einsum letters of the module.
        scalars: ``{symbol: identifier}`` for sizes and constants in scope.
        arrays: ``{tensor name: identifier}`` for arrays in scope.
        example_sizes: ``{size symbol: int}``, to choose contraction paths.
        context: names the model and the pass, for error messages.
    """

    def __init__(
        self, names: Names, letters: Letters, scalars, arrays, example_sizes, context
    ):
        self.names = names
        self.letters = letters
        self.scalars = dict(scalars)
        self.arrays = dict(arrays)
        self.example_sizes = example_sizes
        self.context = context
        self.lines: list[str] = []
        self.cache: dict = {}
        # {argmax tensor label: the index whose range its values take}.
        self.selections: dict[str, sp.Idx] = {}
        # Arrays the caller owns: a result that is one of them must be copied.
        self.external = set(self.arrays.values()) | {"output_grad"}
        # Arrays this pass allocates, with their indices: candidates to be
        # overwritten by a later statement once nothing reads them.
        self.owned: dict[str, tuple] = {}
        self.array_printer = _ArrayPrinter()
        self.scalar_printer = _ScalarPrinter()

    # Printing.

    def _symbols(self, expr):
        return expr.xreplace(
            {symbol: sp.Symbol(code) for symbol, code in self.scalars.items()}
        )

    def scalar(self, expr) -> str:
        """Python code of a scalar expression of sizes and constants."""
        expr = sp.sympify(expr)
        unknown = expr.free_symbols - set(self.scalars)
        if unknown:
            raise NotImplementedError(
                f"{self.context}: symbols {sorted(map(str, unknown))} are not sizes "
                "or constants of the model"
            )
        return self.scalar_printer.doprint(self._symbols(expr))

    def emit(self, line: str) -> None:
        if isinstance(line, InPlace):
            self.lines.append(line)
            return
        if _selects(line) and not line.lstrip().startswith("#"):
            # np.where computes every branch everywhere (select_or_zero also
            # multiplies by 0): overflow or 0 * inf in a branch not taken must
            # not warn, or raise under np.errstate.
            self.lines.append(
                "with np.errstate(over='ignore', invalid='ignore', divide='ignore'):"
            )
            line = "    " + line
        self.lines.append(line)

    # Reads.

    def read(self, read: sp.Indexed) -> Operand:
        """The array of a tensor read, padded, windowed and sliced as needed."""
        key = ("read", sp.srepr(read))
        if key in self.cache:
            return self.cache[key]
        label = str(read.base.label)
        if label not in self.arrays:
            raise NotImplementedError(f"{self.context}: {label} is not available here")
        code = self.arrays[label]
        shape = read.base.shape
        axes, pads, windows, selectors = [], [], [], []
        for axis, (position, size) in enumerate(zip(read.indices, shape, strict=True)):
            plan = self._axis_plan(position, size, axis, read)
            pads.append(plan["pad"])
            selectors.append(plan["selector"])
            if plan["index"] is not None:
                axes.append(plan["index"])
            if plan["window"] is not None:
                windows.append(plan["window"])
        axes.extend(window[2] for window in windows)

        current = code
        if any(low != 0 or high != 0 for low, high in pads):
            target = self.names.temporary("padded")
            widths = ", ".join(
                f"({self.scalar(lo)}, {self.scalar(hi)})" for lo, hi in pads
            )
            self.emit(f"{target} = np.pad({current}, ({widths},))")
            current = target
        for axis, length, _, _ in windows:
            target = current if current != code else self.names.temporary("windows")
            self.emit(
                f"{target} = sliding_window_view("
                f"{current}, {self.scalar(length)}, axis={axis})"
            )
            current = target
        selectors.extend(selector for _, _, _, selector in windows)
        while selectors and selectors[-1] == ":":
            selectors.pop()
        if selectors:
            current = f"{current}[{', '.join(selectors)}]"
        operand = Operand(current, tuple(axes))
        self.cache[key] = operand
        return operand

    def _axis_plan(self, position, size, axis, read):
        context = f"{self.context}, read {read}"
        coefficients, offset = affine_parts(position, context)
        if (
            list(coefficients.values()) == [1]
            and offset == 0
            and sp.expand(next(iter(coefficients)).upper - (size - 1)) == 0
        ):
            index = next(iter(coefficients))
            return {"pad": (0, 0), "selector": ":", "index": index, "window": None}
        low, high = value_range(position, context)
        pad_low = sp.Max(0, -low)
        pad_high = sp.Max(0, sp.expand(high - (size - 1)))
        start = sp.expand(offset + pad_low)
        plan = {"pad": (pad_low, pad_high), "index": None, "window": None}
        if not coefficients:
            plan["selector"] = self.scalar(start)
            return plan
        ordered = sorted(
            coefficients,
            key=lambda i: (self._example(i.upper + 1), str(i)),
        )
        if len(coefficients) > 2 or (
            coefficients[ordered[-1]].is_negative and coefficients[ordered[-1]] != -1
        ):
            raise NotImplementedError(
                f"{context}: an index expression {position} with more than two "
                "indices or a negative coefficient other than -1 on its larger index"
            )
        if len(ordered) == 2:
            # The smaller index (a kernel offset) becomes a window axis; its
            # coefficient (a dilation) is the window's step.
            window_index, index = ordered
            step = coefficients[window_index]
            count = window_index.upper + 1
            if step.is_negative:
                # Read the window backwards: kh = 0 sits at its far end.
                length = sp.expand(-step * (count - 1) + 1)
                start = sp.expand(start - (length - 1))
                selector = "::-1" if step == -1 else f"::-{self.scalar(-step)}"
            else:
                length = sp.expand(step * (count - 1) + 1)
                selector = ":" if step == 1 else f"::{self.scalar(step)}"
            plan["window"] = (axis, length, window_index, selector)
        else:
            index = ordered[0]
        count = index.upper + 1
        step = coefficients[index]
        plan["index"] = index
        if step == -1:
            plan["selector"] = (
                f"reversed_slice({self.scalar(start)}, {self.scalar(count)})"
            )
        else:
            stop = self.scalar(sp.expand(start + step * (count - 1) + 1))
            stride = "" if step == 1 else f":{self.scalar(step)}"
            plan["selector"] = f"{self.scalar(start)}:{stop}{stride}"
        return plan

    def _example(self, size) -> int:
        examples = {symbol: sp.Integer(v) for symbol, v in self.example_sizes.items()}
        value = sp.sympify(sp.sympify(size).xreplace(examples))
        if not value.is_Number:
            return 1
        return int(value)

    # Elementwise expressions.

    def align(self, operand: Operand, indices) -> str:
        """Code of ``operand`` with axes reordered and expanded to ``indices``."""
        own = list(operand.indices)
        if len(set(own)) != len(own):
            letters = "".join(self.letters.letter(i) for i in own)
            unique = list(dict.fromkeys(own))
            target = "".join(self.letters.letter(i) for i in unique)
            operand = Operand(
                f"np.einsum('{letters}->{target}', {operand.code})", tuple(unique)
            )
            own = unique
        missing = [i for i in own if i not in indices]
        if missing:
            raise NotImplementedError(
                f"{self.context}: index {missing[0]} of {operand.code} is not free here"
            )
        code = operand.code
        order = [i for i in indices if i in own]
        if order != own:
            permutation = ", ".join(str(own.index(i)) for i in order)
            code = f"{code}.transpose({permutation})"
        if order == list(indices):
            return code
        selectors = [":" if i in own else "None" for i in indices]
        if (
            code.endswith("]")
            and "transpose" not in code
            and "(" not in code.split("[")[0]
        ):
            return f"({code})[{', '.join(selectors)}]"
        return f"{code}[{', '.join(selectors)}]"

    def elementwise(self, expr, indices) -> str:
        """NumPy code of a sum-free expression, broadcast to ``indices``.

        An index standing outside any read is its value: ``np.arange`` along
        its axis.
        """
        expr = self._restructure(self._hoist_scalars(self._name_sums(expr)))
        stand_ins = {}
        for read in sorted(expr.atoms(sp.Indexed), key=sp.srepr):
            operand = self.read(read)
            stand_ins[read] = sp.Symbol(self.align(operand, indices))
        for index in sorted(expr.xreplace(stand_ins).atoms(sp.Idx), key=str):
            values = Operand(f"np.arange({self.scalar(index.upper + 1)})", (index,))
            stand_ins[index] = sp.Symbol(self.align(values, indices))
        for bracket in expr.atoms(InRange):
            raise NotImplementedError(
                f"{self.context}: a range bracket {bracket} that no zero-padded "
                "read absorbs"
            )
        unknown = (
            expr.xreplace(stand_ins).free_symbols
            - set(self.scalars)
            - set(stand_ins.values())
        )
        if unknown:
            raise NotImplementedError(
                f"{self.context}: unknown symbols {sorted(map(str, unknown))}"
            )
        return self.array_printer.doprint(self._symbols(expr.xreplace(stand_ins)))

    def _restructure(self, expr, top=True):
        """Names shared subexpressions once and multiplies small factors first.

        Every sum, function or fractional power inside an expression becomes a
        named array, computed once however often it recurs (here or in a later
        statement). In a product, the factors over fewer indices are multiplied
        together before they meet the large ones: one pass over the large
        arrays instead of one per factor.
        """
        if isinstance(expr, sp.Indexed) or not expr.atoms(sp.Indexed):
            return expr
        if isinstance(expr, sp.log) and expr.args[0].is_Add and 1 in expr.args[0].args:
            # log(1 + a) loses a when a is tiny; log1p keeps it.
            expr = log1p(expr.args[0] - 1)
        if isinstance(expr, sp.Piecewise):
            # Branch values stay inline, inside np.where's np.errstate: a value
            # computed apart would warn for the entries its branch never takes.
            rebuilt = expr
        else:
            rebuilt = expr.func(*(self._restructure(arg, False) for arg in expr.args))
        if rebuilt.is_Mul:
            rebuilt = self._small_factors_first(rebuilt)
        shared = (
            rebuilt.is_Add
            or (
                isinstance(rebuilt, sp.Function)
                and not isinstance(rebuilt, sp.Piecewise)
            )
            or (rebuilt.is_Pow and not rebuilt.exp.is_Integer)
        )
        if top or not shared:
            return rebuilt
        return self._named(rebuilt)

    def _value_key(self, expr):
        """The cache key of ``expr``'s values and the renaming behind it: its
        indices become placeholders, in the order of their letters, so that
        ``1/sqrt(v[b])`` and ``1/sqrt(v[b'])`` are one array."""
        own = tuple(self._ordered(expr.atoms(sp.Idx)))
        placeholders = {
            index: sp.Idx(f"_own{k}", (index.lower, index.upper))
            for k, index in enumerate(own)
        }
        return ("value", sp.srepr(expr.xreplace(placeholders))), placeholders

    def _named(self, expr):
        """A read of an array holding ``expr``, computed on first use."""
        key, placeholders = self._value_key(expr)
        back = {placeholder: index for index, placeholder in placeholders.items()}
        if key not in self.cache:
            own = tuple(placeholders)
            name = self.names.temporary("v")
            line = f"{name} = {self.elementwise(expr, own)}"
            if self._allocates_floats([expr]):
                line = plan_in_place(self, self._restructure(expr), own, name, line)
                self.owned[name] = own
            self.emit(line)
            base = sp.IndexedBase(name, shape=tuple(i.upper + 1 for i in own))
            self.arrays[name] = name
            self.cache[key] = (
                base[tuple(placeholders[i] for i in own)] if own else sp.Symbol(name)
            )
            if not own:
                self.scalars[sp.Symbol(name)] = name
        return self.cache[key].xreplace(back)

    def remember(self, expr, indices, code) -> None:
        """Records that array ``code`` holds ``expr`` over ``indices``."""
        base = sp.IndexedBase(code, shape=tuple(i.upper + 1 for i in indices))
        # As written and with its parts named, as statements meet it.
        for form in (expr, self._restructure(expr)):
            key, placeholders = self._value_key(form)
            if set(placeholders) == set(indices):
                read = base[tuple(placeholders[i] for i in indices)]
                self.cache.setdefault(key, read)

    def _small_factors_first(self, product):
        full = product.atoms(sp.Idx)
        small = [a for a in product.args if a.atoms(sp.Idx) < full]
        large = [a for a in product.args if a.atoms(sp.Idx) == full]
        covered = set().union(*(a.atoms(sp.Idx) for a in small)) if small else set()
        if not large or len(small) < 2 or covered == full:
            return product
        grouped = sp.Mul(*small)
        if grouped.atoms(sp.Indexed):
            grouped = self._named(grouped)
        return sp.Mul(grouped, *large, evaluate=False)

    def _hoist_scalars(self, expr):
        """Computes each scalar Piecewise once, as plain Python.

        Plain Python evaluates only the branch taken, so ``1 / (1 - p)`` is never
        evaluated at ``p = 1``; ``np.where`` would evaluate both branches.
        """
        found = [
            node
            for node in sp.preorder_traversal(expr)
            if isinstance(node, sp.Piecewise)
            and not node.atoms(sp.Idx)
            and not node.atoms(sp.Indexed)
        ]
        replacements = {}
        for node in found:
            key = ("scalar", sp.srepr(node))
            if key not in self.cache:
                name = self.names.temporary("scale")
                self.emit(f"{name} = {self.scalar(node)}")
                symbol = sp.Symbol(name)
                self.scalars[symbol] = name
                self.cache[key] = symbol
            replacements[node] = self.cache[key]
        return expr.xreplace(replacements)

    def _name_sums(self, expr):
        """Computes each sum nested in ``expr`` into its own array first."""
        sums = [
            node for node in sp.preorder_traversal(expr) if isinstance(node, sp.Sum)
        ]
        outermost = [s for s in sums if not any(s != o and o.has(s) for o in sums)]
        replacements = {}
        for summation in outermost:
            free = self._ordered(summation.free_symbols & summation.atoms(sp.Idx))
            free = [i for i in free if isinstance(i, sp.Idx)]
            # One array for sums that differ only in the names of their bound
            # indices: sum over n of x[b, n]**2 is sum over n' of x[b, n']**2.
            key = ("sum", sp.srepr(_bound_renamed(summation)), tuple(free))
            if key not in self.cache:
                self.cache[key] = self.terms(normalize(summation, FreshIndices()), free)
            code = self.cache[key]
            base = sp.IndexedBase(code, shape=tuple(i.upper + 1 for i in free))
            self.arrays[code] = code
            replacements[summation] = base[tuple(free)] if free else sp.Symbol(code)
            if not free:
                self.scalars[sp.Symbol(code)] = code
        return expr.xreplace(replacements)

    def _ordered(self, indices):
        return sorted(
            indices,
            key=lambda i: self.letters.letter(i) if isinstance(i, sp.Idx) else "",
        )

    # Sums of terms.

    def terms(
        self, terms, indices, name: str | None = None, dtype="dtype", fresh=False
    ) -> str:
        """Emits ``name = sum of terms`` with axes ``indices``; returns ``name``.

        With ``fresh``, ``name`` is always a new array that may be written to.
        """
        indices = list(indices)
        name = name or self.names.temporary("t")
        if not terms:
            shape = self._shape(indices)
            self.emit(f"{name} = np.zeros({shape}, dtype={dtype})")
            return name
        regular = [t for t in terms if not t.factor.has(sp.KroneckerDelta)]
        scatters = [t for t in terms if t.factor.has(sp.KroneckerDelta)]
        if regular and scatters:
            # The scatter-adds go straight into the sum of the other terms.
            self.terms(regular, indices, name, dtype, fresh=True)
            for term in scatters:
                code = self._scatter(term, indices, into=name)
                if code is not None:
                    self.emit(f"{name} += {code}")
            return name
        parts, covered = [], set()
        for term in terms:
            if term.factor.has(sp.KroneckerDelta):
                code, used = self._scatter(term, indices), set(indices)
            else:
                code, used = self._term(term, indices)
            parts.append(code)
            covered |= used
        total = parts[0]
        for part in parts[1:]:
            total = (
                f"{total} - {part[1:]}" if part.startswith("-") else f"{total} + {part}"
            )
        if covered != set(indices):
            total = f"np.broadcast_to({total}, {self._shape(indices)}).astype({dtype})"
        elif total in self.external or (fresh and total.isidentifier()):
            # A bare read: copy, so the result never aliases another array.
            total = f"{total}.copy()"
        line = f"{name} = {total}"
        bare = len(terms) == 1 and isinstance(terms[0].factor, (sp.Indexed, sp.Symbol))
        if (not bare or total.endswith(".copy()")) and self._allocates_floats(
            [term.factor for term in terms]
        ):
            if covered == set(indices) and not any(term.summed for term in terms):
                shaped = sp.Add(
                    *(self._restructure(self._hoist_scalars(t.factor)) for t in terms),
                    evaluate=False,
                )
                line = plan_in_place(self, shaped, indices, name, line)
            self.owned[name] = tuple(indices)
        self.emit(line)
        return name

    def _allocates_floats(self, exprs) -> bool:
        """Whether arithmetic on ``exprs`` makes a new floating-point array: it
        reads an input, parameter, state or array of this pass, and compares
        nothing (``np.where`` of integers would give integers)."""
        for expr in exprs:
            # np.real of a real array is that array, not a copy.
            if expr.has(sp.Piecewise, sp.re, sp.im) or expr.atoms(sp.Rel):
                return False
        for expr in exprs:
            for read in expr.atoms(sp.Indexed):
                code = self.arrays.get(str(read.base.label))
                if code in self.external or code in self.owned:
                    return True
        return False

    def _scatter(self, term, indices, into=None) -> str | None:
        """A term whose deltas tie target axes to other indices: scatter-add.

        ``sum_S f * delta(k, e)`` puts each value of ``f`` at position ``e`` of
        axis ``k``: the values are computed on the grid of the untied target
        axes and of the summed indices ``e`` reads, every other summed index is
        contracted first, and ``np.add.at`` accumulates them. Positions outside
        the target's range (zero padding) are dropped.
        """
        tied, rest = {}, []
        for arg in sp.Mul.make_args(term.factor):
            if not isinstance(arg, sp.KroneckerDelta):
                rest.append(arg)
                continue
            left, right = arg.args
            if left in indices and left not in tied:
                tied[left] = right
            elif right in indices and right not in tied:
                tied[right] = left
            else:
                raise NotImplementedError(
                    f"{self.context}: a Kronecker delta {arg} that ties no free "
                    "axis of the result"
                )
        plan = self._slice_plan(tied, indices)
        if plan is not None:
            return self._scatter_by_slices(term, rest, tied, indices, plan, into)
        expanded = self._expand_selections(term, tied, rest)
        if expanded is not None and self._slice_plan(expanded[1], indices):
            return self._scatter_selected(term, tied, rest, indices, expanded)
        return self._scatter_add_at(term, tied, rest, indices)

    def _scatter_selected(self, term, tied, rest, indices, expanded) -> str:
        """Slice-adds per argmax value for small windows, else ``np.add.at``.

        The slices cost one pass over the values per window offset; past about
        16 offsets one ``np.add.at`` is faster (measured: K = 2 pooling 1.5x
        faster by slices, K = 32 4x slower).
        """
        term_, tied_, rest_ = expanded
        plan = self._slice_plan(tied_, indices)
        offsets = sp.Mul(*(s.upper + 1 for s in term_.summed if s not in term.summed))
        slices, by_slices = self._captured(
            lambda: self._scatter_by_slices(term_, rest_, tied_, indices, plan), False
        )
        added, by_add_at = self._captured(
            lambda: self._scatter_add_at(term, tied, rest, indices), False
        )
        name = self.names.temporary("scattered")
        self.emit(f"if {self.scalar(offsets)} <= 16:")
        self.lines += ["    " + line for line in slices]
        self.lines.append(f"    {name} = {by_slices}")
        self.emit("else:")
        self.lines += ["    " + line for line in added]
        self.lines.append(f"    {name} = {by_add_at}")
        return name

    def _scatter_add_at(self, term, tied, rest, indices) -> str:
        """The scatter by ``np.add.at``: any positions, one call."""
        reached = set()
        for expr in tied.values():
            reached |= expr.atoms(sp.Idx)
        grid = [i for i in indices if i not in tied]
        grid += [
            i for i in self._ordered(reached) if i not in grid and i not in indices
        ]
        contracted = tuple(s for s in term.summed if s not in grid)
        values = self.terms([Term(contracted, sp.Mul(*rest))], grid)
        positions = []
        for index in indices:
            expr = tied.get(index, index)
            code = self.names.temporary("at")
            self.emit(f"{code} = {self.elementwise(expr, grid)}")
            positions.append((code, index))

        name = self.names.temporary("scattered")
        widths, starts, stops = [], [], []
        for code, index in positions:
            size = self.scalar(index.upper + 1)
            if index in tied:
                low, high = f"{code}_low", f"{code}_high"
                self.emit(f"{low} = max(0, -int({code}.min()))")
                self.emit(f"{high} = max(0, int({code}.max()) - {size} + 1)")
                widths.append(f"{size} + {low} + {high}")
                starts.append(low)
                stops.append(f"{low} + {size}")
            else:
                widths.append(size)
                starts.append("0")
                stops.append(size)
        shape = "(" + ", ".join(widths) + ("," if len(widths) == 1 else "") + ")"
        self.emit(f"{name} = np.zeros({shape}, dtype={values}.dtype)")
        at = ", ".join(
            f"{code} + {start}" if start != "0" else code
            for (code, _), start in zip(positions, starts, strict=True)
        )
        self.emit(
            f"np.add.at({name}, ({at},), "
            f"np.broadcast_to({values}, {self._shape(grid)}))"
        )
        window = ", ".join(f"{a}:{b}" for a, b in zip(starts, stops, strict=True))
        self.emit(f"{name} = {name}[{window}]")
        return name

    def _expand_selections(self, term, tied, rest):
        """Tied positions that read argmax tensors, as sums over their ranges.

        ``delta(h, S*i + A[i])`` with ``A`` an argmax over ``k`` in ``0..K-1``
        is ``sum_k [A[i] == k] delta(h, S*i + k)``: the position becomes
        affine, and the scatter one strided slice-add per value of ``k``
        instead of ``np.add.at``. None when a tied position reads anything else.
        """
        reads = set()
        for expr in tied.values():
            reads |= expr.atoms(sp.Indexed)
        if not reads or any(str(r.base.label) not in self.selections for r in reads):
            return None
        if any(
            not sp.sympify(expr.xreplace({r: 0 for r in reads})).atoms(sp.Idx)
            for expr in tied.values()
        ):
            # A position that is the argmax alone (no window around an index)
            # scatters one value per row: np.add.at is already cheap there.
            return None
        replacements, conditions, summed = {}, [], list(term.summed)
        for number, read in enumerate(sorted(reads, key=sp.srepr)):
            over = self.selections[str(read.base.label)]
            fresh = sp.Idx(f"{over.label}_{number}", (over.lower, over.upper))
            replacements[read] = fresh
            conditions.append(sp.Eq(read, fresh))
            summed.append(fresh)
        tied = {index: expr.xreplace(replacements) for index, expr in tied.items()}
        # A selection, not a product with 0/1: inf or NaN elsewhere stays put.
        rest = [sp.Piecewise((sp.Mul(*rest), sp.And(*conditions)), (0, True))]
        deltas = [sp.KroneckerDelta(index, expr) for index, expr in tied.items()]
        factor = sp.Mul(*rest, *deltas)
        return Term(tuple(summed), factor), tied, rest

    def _slice_plan(self, tied, indices):
        """How to scatter with slices, or None when only ``np.add.at`` can.

        Slices apply when each tied position is affine, ``c * i + (small
        indices) + offset``, with one large index ``i`` (a positive
        coefficient, used by no other axis) per tied axis: for each value of
        the small indices (kernel offsets, a handful) the values land on a
        strided slice, and no slice writes one position twice.
        """
        plan, large_used = {}, set()
        for index, expr in tied.items():
            if expr.atoms(sp.Indexed):
                return None
            coefficients, offset = affine_parts(expr, self.context)
            if not coefficients:
                # A fixed position: one row (a sample) takes the values.
                plan[index] = (None, 0, {}, offset)
                continue
            large = max(
                coefficients, key=lambda i: (self._example(i.upper + 1), str(i))
            )
            if (
                not coefficients[large].is_positive
                or large in large_used
                or large in indices
            ):
                return None
            large_used.add(large)
            small = {i: c for i, c in coefficients.items() if i != large}
            plan[index] = (large, coefficients[large], small, offset)
        smalls = set()
        for _, _, small, _ in plan.values():
            smalls |= set(small)
        if smalls & large_used or smalls & set(indices):
            return None
        return plan

    def _scatter_by_slices(self, term, rest, tied, indices, plan, into=None):
        """``np.add.at``'s work done with strided slice-adds, one per value of
        the small indices (kernel offsets): a loop over offsets, not data.

        With ``into`` (a writable array of the result's shape) and no padding,
        the adds go into it and None is returned."""
        smalls = []
        for _, _, small, _ in plan.values():
            smalls += [i for i in self._ordered(small) if i not in smalls]
        kept = [plan[i][0] if i in plan else i for i in indices]
        kept = [i for i in kept if i is not None]
        grid = kept + smalls
        contracted = tuple(s for s in term.summed if s not in grid)
        loops = {}
        for index in smalls:
            loops[index] = self.names.name(("loop", index), str(index.label))
            self.scalars[sp.Symbol(loops[index])] = loops[index]
        as_loop = {index: sp.Symbol(name) for index, name in loops.items()}
        # Values that need no contraction are computed offset by offset, on
        # the kept grid only: no array with the kernel offsets as extra axes.
        per_offset = smalls and not contracted
        if per_offset:
            value_lines, dtype = self._per_offset_values(sp.Mul(*rest), as_loop, kept)
        else:
            values = self.terms([Term(contracted, sp.Mul(*rest))], grid)
            dtype = f"{values}.dtype"
        name = self.names.temporary("scattered")
        widths, targets, crops = [], [], []
        for index in indices:
            size = index.upper + 1
            if index not in plan:
                widths.append(self.scalar(size))
                targets.append(":")
                crops.append(":")
                continue
            large, step, small, offset = plan[index]
            if large is None:
                widths.append(self.scalar(size))
                targets.append(self.scalar(offset))
                crops.append(":")
                continue
            low, high = value_range(tied[index], self.context)
            pad_low = sp.Max(0, -low)
            pad_high = sp.Max(0, sp.expand(high - (size - 1)))
            widths.append(self.scalar(size + pad_low + pad_high))
            start = sp.expand(offset + pad_low + sum(c * i for i, c in small.items()))
            stop = sp.expand(start + step * large.upper + 1)
            start, stop = (self.scalar(e.xreplace(as_loop)) for e in (start, stop))
            stride = "" if step == 1 else f":{self.scalar(step)}"
            targets.append(f"{start}:{stop}{stride}")
            crops.append(f"{self.scalar(pad_low)}:{self.scalar(pad_low + size)}")
        shape = "(" + ", ".join(widths) + ("," if len(widths) == 1 else "") + ")"
        padded = any(crop != ":" for crop in crops)
        if into is not None and not padded:
            name = into
        else:
            self.emit(f"{name} = np.zeros({shape}, dtype={dtype})")
        if smalls:
            self.emit("# One strided slice-add per kernel offset: a loop over offsets.")
        depth = ""
        for index in smalls:
            self.emit(
                f"{depth}for {loops[index]} in range({self.scalar(index.upper + 1)}):"
            )
            depth += "    "
        if per_offset:
            *lines, values = value_lines
            for line in lines:
                self.lines.append(depth + line)
            self.emit(f"{depth}{name}[{', '.join(targets)}] += {values}")
        else:
            picks = [":"] * len(kept) + [loops[i] for i in smalls]
            self.emit(
                f"{depth}{name}[{', '.join(targets)}] += {values}[{', '.join(picks)}]"
            )
        if padded:
            self.emit(f"{name} = {name}[{', '.join(crops)}]")
        return None if name == into else name

    def _per_offset_values(self, expr, as_loop, kept):
        """Statements computing ``expr`` for one value of the loop variables.

        Returns the lines (the last one is the value's code, not a statement)
        and the code of the values' dtype. Nothing computed inside the loop is
        remembered for statements after it.
        """
        captured, code = self._captured(
            lambda: self.elementwise(expr.xreplace(as_loop), kept), False
        )
        reads = [
            self.arrays[str(read.base.label)]
            for read in sorted(expr.atoms(sp.Indexed), key=sp.srepr)
            if str(read.base.label) not in self.selections
            and str(read.base.label) in self.arrays
        ]
        dtype = f"np.result_type({', '.join(reads)})" if reads else "dtype"
        if _selects(code):
            captured.append(
                "with np.errstate(over='ignore', invalid='ignore', divide='ignore'):"
            )
            value = self.names.temporary("value")
            captured.append(f"    {value} = {code}")
            code = value
        return captured + [code], dtype

    def maximum(self, expr, indices, name, positions) -> None:
        """``name = max over the limits of the body``, and the argmax.

        ``positions`` names one integer array per reduced index: where the
        first maximum (row-major over the reduced indices) sits.
        """
        reduced = [limit[0] for limit in expr.limits]
        grid = list(indices) + reduced
        body = self.elementwise(expr.function, grid)
        flat = self.names.temporary("candidates")
        kept = self._shape(indices)[:-1].rstrip(",")
        kept = kept + ", -1)" if indices else "(-1,)"
        self.emit(
            f"{flat} = np.broadcast_to({body}, {self._shape(grid)}).reshape({kept})"
        )
        first = self.names.temporary("first")
        self.emit(f"{first} = np.argmax({flat}, axis=-1)")
        self.emit(
            f"{name} = np.take_along_axis({flat}, {first}[..., None], axis=-1)[..., 0]"
        )
        targets = ", ".join(positions) + ("," if len(positions) == 1 else "")
        self.emit(f"{targets} = np.unravel_index({first}, {self._shape(reduced)})")

    def _shape(self, indices) -> str:
        sizes = [self.scalar(i.upper + 1) for i in indices]
        return "(" + ", ".join(sizes) + ("," if len(sizes) == 1 else "") + ")"

    def _term(self, term, indices):
        """Code of one term, broadcastable to ``indices``, and the indices it covers."""
        if not term.summed:
            used = term.factor.atoms(sp.Idx) & set(indices)
            return self.elementwise(term.factor, indices), used
        outside, inside = split_factor(term.factor, term.summed)
        kept = [i for i in indices if i in inside.atoms(sp.Idx)]
        plan = plan_correlation(
            sp.Mul.make_args(inside), kept, self._example, self.context
        )
        if plan is not None:
            result = self._correlation(plan, inside, kept)
            return self._product(result, kept, outside, indices)
        operands, kept = self._operands(inside, indices)
        return self._product(self._einsum(operands, kept), kept, outside, indices)

    def _operands(self, inside, indices):
        operands = []
        for arg in sp.Mul.make_args(inside):
            # A square is its base twice: einsum multiplies as it sums, with no
            # array of squares in between.
            count = 1
            if arg.is_Pow and arg.exp == 2:
                arg, count = arg.base, 2
            if isinstance(arg, sp.Indexed):
                operands += [self.read(arg)] * count
                continue
            if self._value_key(arg)[0] not in self.cache:
                # With its parts named, as an elementwise statement has them.
                arg = self._restructure(arg)
            named = self._named(arg)
            operand = self.read(named) if isinstance(named, sp.Indexed) else named
            operands += [operand] * count
        kept = [i for i in indices if any(i in op.indices for op in operands)]
        return operands, kept

    def _correlation(self, plan, inside, kept) -> str:
        """A correlation on the flat plane, with einsum over windows as the
        fallback where the plane would waste most of its columns (a kernel far
        wider than the image) or where a weight gradient meets inf or NaN."""
        key = ("correlation", sp.srepr(plan.plain), sp.srepr(plan.shifted), tuple(kept))
        if key in self.cache:
            return self.cache[key]
        condition = economical(self, plan)
        # One shifted axis has no row ends: nothing to waste, no 0 * inf.
        if len(plan.axes) == 1:
            self.cache[key] = emit_correlation(self, plan, kept)
            return self.cache[key]
        result = self.names.temporary("c")
        planes = {k for k in self.cache if k[0] == "plane"}
        fast, code = self._captured(lambda: emit_correlation(self, plan, kept), True)
        for plane in sorted(
            k for k in self.cache if k[0] == "plane" and k not in planes
        ):
            self.emit(f"{self.cache[plane][0]} = None")
        self.emit(f"{result} = None")
        self.emit(f"if {condition}:")
        for line in fast:
            self.lines.append("    " + line)
        self.lines.append(f"    {result} = {code}")
        if plan.positions_summed:
            # A zero past a row's end times an inf of the plane is NaN, where
            # the windows never read that product: recompute the exact sum.
            self.lines.append(f"    if not np.isfinite({result}).all():")
            self.lines.append(f"        {result} = None")

        def windows():
            operands, order = self._operands(inside, kept)
            return self._einsum(operands, order)

        slow, code = self._captured(windows, False)
        self.emit(f"if {result} is None:")
        for line in slow:
            self.lines.append("    " + line)
        self.lines.append(f"    {result} = {code}")
        self.cache[key] = result
        return result

    def _captured(self, emit, keep_cache):
        """The lines ``emit()`` writes, and what it returns, kept apart.

        Without ``keep_cache`` nothing computed there is remembered: the lines
        run in a branch that later statements cannot count on.
        """
        cache, lines = dict(self.cache), self.lines
        self.lines = []
        try:
            value = emit()
            captured = self.lines
        finally:
            self.lines = lines
            if not keep_cache:
                self.cache = cache
        return captured, value

    def _product(self, result, kept, outside, indices):
        """The term ``outside * result`` over ``indices``, and the indices it covers."""
        base = sp.IndexedBase(result, shape=tuple(i.upper + 1 for i in kept))
        self.arrays[result] = result
        product = outside * (base[tuple(kept)] if kept else sp.Symbol(result))
        if not kept:
            self.scalars[sp.Symbol(result)] = result
        used = (outside.atoms(sp.Idx) | set(kept)) & set(indices)
        return self.elementwise(product, indices), used

    def _sum_by_blas(self, operand, output):
        """Code summing ``operand`` to ``output`` by BLAS, or None: when the
        summed axes lead, the kept ones follow in order, and ``operand`` is a
        named array or a slice of one."""
        indices, output = tuple(operand.indices), tuple(output)
        if (
            not output
            or len(output) == len(indices)
            or len(set(indices)) != len(indices)
            or not re.fullmatch(r"\w+(\[[^\]]*\])?", operand.code)
        ):
            return None
        # Only a sum over the leading (batch) axes: over trailing axes NumPy's
        # own pairwise sum is as fast, and a row's sum then does not depend on
        # its neighbours (BLAS blocks rows), as a per-sample layer needs.
        if indices[len(indices) - len(output) :] != output:
            return None
        summed = indices[: len(indices) - len(output)]
        sizes = [self.scalar(i.upper + 1) for i in summed]
        size = "*".join(c if c.isidentifier() else f"({c})" for c in sizes)
        kept = self._shape(output) if len(output) > 1 else ""
        return _ones_product(operand.code, size, kept)

    def _einsum(self, operands, output) -> str:
        inputs = [
            "".join(self.letters.letter(i) for i in op.indices) for op in operands
        ]
        target = "".join(self.letters.letter(i) for i in output)
        subscripts = ",".join(inputs) + "->" + target
        key = ("einsum", _summed_renamed(subscripts), tuple(op.code for op in operands))
        if key in self.cache:
            return self.cache[key]
        name = self.names.temporary("c")
        arguments = ", ".join(op.code for op in operands)
        if len(operands) == 1 and (product := self._sum_by_blas(operands[0], output)):
            self.emit("# A sum over the leading axes as a product with ones:")
            self.emit("# BLAS reads the array once, 2x faster than einsum (measured).")
            self.emit(f"{name} = {product}")
        elif len(operands) == 1:
            self.emit(f"{name} = np.einsum('{subscripts}', {arguments})")
        elif len(operands) == 2 and not _blas_applies(inputs, target):
            # An index kept by both operands rules out a BLAS call; einsum's own
            # C loop is then one pass over memory, and the path is trivial.
            self.emit(f"{name} = np.einsum('{subscripts}', {arguments})")
        else:
            shapes = [
                tuple(self._example(i.upper + 1) for i in op.indices) for op in operands
            ]
            path, info = opt_einsum.contract_path(
                subscripts, *shapes, shapes=True, optimize="optimal"
            )
            steps = ", ".join(str(tuple(step)) for step in path)
            no_blas = not any(step[-1] for step in info.contraction_list)
            if no_blas and info.naive_cost <= 2 * info.opt_cost:
                # No step is a matrix product and the single loop costs no more
                # than the pairwise steps: einsum's C loop reads every operand
                # once and writes no intermediate (2-3x faster, measured).
                self.emit(
                    f"# one pass: {float(info.naive_cost):.3g} operations at "
                    "example sizes, no step a matrix product"
                )
                self.emit(f"{name} = np.einsum('{subscripts}', {arguments})")
            else:
                self.emit(
                    f"# path cost at example sizes: {float(info.opt_cost):.3g} "
                    "operations"
                )
                self.emit(
                    f"{name} = np.einsum('{subscripts}', {arguments}, "
                    f"optimize=['einsum_path', {steps}])"
                )
        self.cache[key] = name
        return name


def _ones_product(code, summed_size, kept_shape) -> str:
    """``code`` summed over its leading axes of total size ``summed_size`` by a
    vector-matrix product with ones."""
    ones = f"np.ones({summed_size}, dtype={code}.dtype)"
    product = f"{ones} @ {code}.reshape({summed_size}, -1)"
    return f"({product}).reshape({kept_shape})" if kept_shape else product


def _bound_renamed(summation):
    """``summation`` with its bound indices renamed in order of their limits."""
    renames = {}
    for position, (index, low, high) in enumerate(summation.limits):
        renames[index] = sp.Idx(f"_bound{position}", (low, high))
    return summation.xreplace(renames)


def _summed_renamed(subscripts: str) -> str:
    """Einsum subscripts with the summed letters renamed in order of first
    appearance: the same contraction whatever its bound indices are called."""
    inputs, target = subscripts.split("->")
    renames = {}
    for letter in inputs.replace(",", ""):
        if letter not in target and letter not in renames:
            renames[letter] = f"<{len(renames)}>"
    return "".join(renames.get(letter, letter) for letter in subscripts)


def _selects(code: str) -> bool:
    """Whether ``code`` computes values that a condition may then drop."""
    return "np.where(" in code or "select_or_zero(" in code

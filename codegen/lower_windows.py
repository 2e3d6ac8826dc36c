"""Lowering of window contractions: a correlation as matrix products per offset.

A term that contracts a plain array with a tensor read at shifted positions,
``sum x[b, c, i + D*kh - P, j + D*kw - P] * a[...]`` (a convolution's forward
pass, its weight gradient, or its input gradient with the flipped kernel), would
go through ``sliding_window_view`` and einsum, which copies every window into a
matrix (im2col) before one matrix product. Here the shifted tensor is written
once onto a flat zero-padded plane instead, with axes ``(rest, rows, columns,
merged)``: the rows and columns of the padded plane and the axes that merge with
the positions (the batch) share one axis ``q``. Each value of the window indices
(a kernel offset) is then one contiguous slice of that axis, which BLAS reads
in place. A row of ``q`` runs over the whole padded width, so the few positions
past the end of a row are either computed and dropped or meet zeros.

Two forms apply, by which indices the term keeps:

- positions summed, window indices kept (a weight gradient):
  ``out[k, a, r] = sum_q A[a, q] X[r, q + offset(k)]``. The offsets of the
  innermost window are stacked as rows of one copy of the plane, and each
  remaining offset is one matrix product.
- positions kept, window indices summed (a forward pass, an input gradient):
  ``out[a, q] = sum_k sum_c A[k, a, c] X[c, q + offset(k)]``. When the result
  has fewer rows than the plane (``a`` smaller than ``c`` at the model's example
  sizes, as in an input gradient), one product computes every offset's
  ``A[k] X`` and one shifted add per offset sums them; otherwise every offset's
  slice of the plane is stacked (im2col from contiguous slices) and one product
  does the whole sum. The choice is made here, at generation time, as einsum's
  contraction paths are.

Any other shape of term returns None and goes through einsum.
"""

from __future__ import annotations

from dataclasses import dataclass

import sympy as sp

from derivations.affine import affine_parts, value_range


@dataclass(frozen=True)
class _Shifted:
    """An axis read at ``position + step * window + offset``."""

    position: sp.Idx
    window: sp.Idx | None
    step: sp.Expr
    offset: sp.Expr
    pad_low: sp.Expr
    pad_high: sp.Expr
    size: sp.Expr

    @property
    def extent(self):
        """The length of the zero-padded axis."""
        return sp.expand(self.size + self.pad_low + self.pad_high)


@dataclass(frozen=True)
class _Plan:
    plain: sp.Indexed
    shifted: sp.Indexed
    axes: tuple  # the _Shifted axes of the shifted read, in its axis order
    rest: tuple  # plain axes of the shifted read that the plane keeps apart
    merged: tuple  # plain axes of the shifted read that merge into q
    outer: tuple  # axes of the plain read that the product keeps (a)
    windows: tuple  # window indices, in the order of the shifted axes
    positions_summed: bool


def _plain_axes(read) -> list | None:
    """The index of each axis of a read of whole axes, else None."""
    found = []
    for position, size in zip(read.indices, read.base.shape, strict=True):
        if not isinstance(position, sp.Idx) or position in found:
            return None
        if position.lower != 0 or sp.expand(position.upper - (size - 1)) != 0:
            return None
        found.append(position)
    return found


def _shifted_axis(position, size, example, context) -> _Shifted | str | None:
    """A shifted axis; an index (a plain axis) as is; None if neither applies."""
    coefficients, offset = affine_parts(position, context)
    if offset.atoms(sp.Indexed) or not coefficients or len(coefficients) > 2:
        return None
    ordered = sorted(coefficients, key=lambda i: (example(i.upper + 1), str(i)))
    large = ordered[-1]
    if coefficients[large] != 1 or large.lower != 0:
        return None
    if len(ordered) == 1 and offset == 0 and sp.expand(large.upper - (size - 1)) == 0:
        return large
    window = ordered[0] if len(ordered) == 2 else None
    if window is not None and window.lower != 0:
        return None
    low, high = value_range(position, context)
    return _Shifted(
        position=large,
        window=window,
        step=coefficients[window] if window is not None else sp.S.Zero,
        offset=offset,
        pad_low=sp.Max(0, -low),
        pad_high=sp.Max(0, sp.expand(high - (size - 1))),
        size=size,
    )


def plan_correlation(reads, kept, example, context) -> _Plan | None:
    """How to lower ``sum of reads[0] * reads[1]`` keeping ``kept``, or None."""
    if len(reads) != 2 or not all(isinstance(r, sp.Indexed) for r in reads):
        return None
    plain_axes = [_plain_axes(read) for read in reads]
    if (plain_axes[0] is None) == (plain_axes[1] is None):
        return None
    plain, shifted = reads if plain_axes[0] is not None else reads[::-1]
    a_indices = set(plain_axes[0] if plain_axes[0] is not None else plain_axes[1])

    axes, x_plain = [], []
    for position, size in zip(shifted.indices, shifted.base.shape, strict=True):
        axis = _shifted_axis(position, size, example, f"{context}, read {shifted}")
        if axis is None:
            return None
        if isinstance(axis, _Shifted):
            axes.append(axis)
        else:
            x_plain.append(axis)
    windows = tuple(a.window for a in axes if a.window is not None)
    positions = [a.position for a in axes]
    used = x_plain + positions + list(windows)
    if not windows or len(set(used)) != len(used):
        return None

    kept = set(kept)
    summed_positions = not (set(positions) & kept)
    if summed_positions:
        # A weight gradient: out[k, a, r] = sum_q A[a, q] X[r, q + offset(k)].
        merged = tuple(i for i in x_plain if i in a_indices)
        rest = tuple(i for i in x_plain if i not in a_indices)
        outer = tuple(
            i for i in plain.indices if i not in merged and i not in positions
        )
        fits = (
            set(positions) <= a_indices
            and not (set(merged) & kept)
            and set(rest) <= kept
            and set(outer) <= kept
            and set(windows) <= kept
            and not (set(windows) & a_indices)
        )
    else:
        # A correlation: out[a, q] = sum_k sum_c A[k, a, c] X[c, q + offset(k)].
        rest = tuple(i for i in x_plain if i in a_indices)
        merged = tuple(i for i in x_plain if i not in a_indices)
        outer = tuple(i for i in plain.indices if i not in rest and i not in windows)
        fits = (
            set(positions) <= kept
            and not (set(positions) & a_indices)
            and set(merged) <= kept
            and not (set(rest) & kept)
            and set(outer) <= kept
            and not (set(windows) & kept)
        )
    if not fits:
        return None
    return _Plan(
        plain, shifted, tuple(axes), rest, merged, outer, windows, summed_positions
    )


def _product(values):
    return sp.Mul(*values) if values else sp.S.One


def _size(index):
    return index.upper + 1


def _transposed(code, order) -> str:
    if list(order) == sorted(order):
        return code
    return f"{code}.transpose({', '.join(str(n) for n in order)})"


def economical(lowerer, plan: _Plan) -> str:
    """Code of the condition under which the flat plane pays.

    Every row of q runs over the padded width: with a kernel far wider than the
    image, most of its columns are padding and the products there are waste.
    """
    computed = _product([a.extent for a in plan.axes[1:]])
    needed = _product([_size(a.position) for a in plan.axes[1:]])
    if computed == needed:
        return "True"
    return f"{lowerer.scalar(computed)} <= 2 * {lowerer.scalar(needed)}"


def emit_correlation(lowerer, plan: _Plan, kept) -> str:
    """Emits the statements of ``plan``; returns the array, axes in ``kept``."""
    for read in (plan.plain, plan.shifted):
        if str(read.base.label) not in lowerer.arrays:
            raise NotImplementedError(
                f"{lowerer.context}: {read.base.label} is not available here"
            )
    emission = _Emission(lowerer, plan)
    if plan.positions_summed:
        code, produced = emission.weight_gradient()
    else:
        code, produced = emission.correlation()
    order = [produced.index(i) for i in kept]
    final = lowerer.names.temporary("c")
    transposed = _transposed(code, order)
    if transposed == code and plan.positions_summed:
        lowerer.emit(f"{final} = {code}")
    else:
        lowerer.emit(f"{final} = np.ascontiguousarray({transposed})")
    return final


class _Emission:
    """The statements of one planned correlation, step by step."""

    def __init__(self, lowerer, plan: _Plan):
        self.lowerer = lowerer
        self.plan = plan
        self.scalar, self.emit = lowerer.scalar, lowerer.emit
        self.names = lowerer.names
        self.plain = lowerer.arrays[str(plan.plain.base.label)]
        self.shifted = lowerer.arrays[str(plan.shifted.base.label)]

        # The padded plane's extents and pads are named once, for short offsets.
        self.axes = []
        for axis in plan.axes:
            low = axis.pad_low
            if not low.is_Atom:
                low = self.define("low", low)
            self.axes.append((axis, low, self.define("extent", axis.extent)))
        self.merged = _product([_size(i) for i in plan.merged])
        self.extents = [extent for _, _, extent in self.axes]
        self.strides = [
            _product(self.extents[n + 1 :]) * self.merged for n in range(len(self.axes))
        ]
        # q runs over the first axis's positions and every padded row after it.
        first = self.axes[0][0].position
        self.count = self.define("positions", _size(first) * self.strides[0])
        self.plane = _product(self.extents) * self.merged
        largest = sp.S.Zero
        for (axis, low, _), stride in zip(self.axes, self.strides, strict=True):
            top = axis.window is not None and axis.step.is_positive
            largest += (
                self.start_of(axis, low, axis.window.upper if top else 0) * stride
            )
        self.largest = largest
        self.length = self.define("flat", sp.Max(self.plane, largest + self.count))
        self.rest = _product([_size(i) for i in plan.rest])
        self.outer = _product([_size(i) for i in plan.outer])

        self.dtype = self.names.temporary("dt")
        self.emit(f"{self.dtype} = np.result_type({self.plain}, {self.shifted})")
        self.flat = self.lay_plane()

        self.loops = {}
        for index in plan.windows:
            name = self.names.name(("loop", index), str(index.label))
            self.loops[index] = name
            lowerer.scalars[sp.Symbol(name)] = name
        self.begin = self.names.temporary("start")

    # Small helpers.

    def shape(self, values) -> str:
        codes = [self.scalar(v) for v in values]
        return "(" + ", ".join(codes) + ("," if len(codes) == 1 else "") + ")"

    def define(self, hint, expr) -> sp.Symbol:
        name = self.names.temporary(hint)
        self.emit(f"{name} = {self.scalar(expr)}")
        symbol = sp.Symbol(name)
        self.lowerer.scalars[symbol] = name
        return symbol

    @staticmethod
    def start_of(axis, low, window_value):
        """Where position 0 of ``axis`` is read on the padded axis."""
        step = axis.step * window_value if axis.window is not None else 0
        return sp.expand(axis.offset + low + step)

    def start(self, windows):
        """The flat offset of a kernel offset, with loop variables for ``windows``."""
        start = sp.S.Zero
        for (axis, low, _), stride in zip(self.axes, self.strides, strict=True):
            value = 0
            if axis.window in windows:
                value = sp.Symbol(self.loops[axis.window])
            start += self.start_of(axis, low, value) * stride
        return start

    def loop_over(self, windows, depth="") -> str:
        for index in windows:
            self.emit(
                f"{depth}for {self.loops[index]} in range({self.scalar(_size(index))}):"
            )
            depth += "    "
        return depth

    def on_rows(self, leading):
        """The split of q over ``leading`` axes, and the crop of the row ends."""
        split = (
            leading
            + [_size(self.axes[0][0].position)]
            + self.extents[1:]
            + [_size(i) for i in self.plan.merged]
        )
        crop = (
            [":"] * (len(leading) + 1)
            + [f":{self.scalar(_size(a.position))}" for a, _, _ in self.axes[1:]]
            + [":"] * len(self.plan.merged)
        )
        return split, crop

    # Steps.

    def lay_plane(self) -> str:
        """The shifted tensor on its flat padded plane, axes (rest, q)."""
        plan = self.plan
        axes = list(plan.shifted.indices)
        order = [axes.index(i) for i in plan.rest]
        for axis, _, _ in self.axes:
            order.append(next(n for n, p in enumerate(axes) if p.has(axis.position)))
        order += [axes.index(i) for i in plan.merged]
        flat = self.names.temporary("flat")
        self.emit(
            f"{flat} = np.zeros({self.shape([self.rest, self.length])}, "
            f"dtype={self.dtype})"
        )
        inner = (
            [_size(i) for i in plan.rest]
            + self.extents
            + [_size(i) for i in plan.merged]
        )
        window = (
            [":"] * len(plan.rest)
            + [
                f"{self.scalar(low)}:{self.scalar(low + a.size)}"
                for a, low, _ in self.axes
            ]
            + [":"] * len(plan.merged)
        )
        self.emit(
            f"{flat}[:, :{self.scalar(self.plane)}].reshape({self.shape(inner)})"
            f"[{', '.join(window)}] = {_transposed(self.shifted, order)}"
        )
        if len(self.axes) == 2:
            # A later weight gradient may read this plane in place (rows()).
            key = ("plane", self.shifted, plan.rest, plan.merged)
            where = (
                flat,
                self.length,
                self.extents[1],
                self.axes[0][1],
                self.axes[1][1],
            )
            self.lowerer.cache.setdefault(key, where)
        return flat

    def rows(self) -> str:
        """The plain operand on q, zero past each row's end: (outer, q)."""
        plan = self.plan
        matrix = self.names.temporary("rows")
        axes = list(plan.plain.indices)
        order = [axes.index(i) for i in plan.outer]
        order += [axes.index(a.position) for a, _, _ in self.axes]
        order += [axes.index(i) for i in plan.merged]
        split, crop = self.on_rows([_size(i) for i in plan.outer])
        fill = [
            f"{matrix} = np.zeros({self.shape([self.outer, self.count])}, "
            f"dtype={self.dtype})",
            f"{matrix}.reshape({self.shape(split)})[{', '.join(crop)}] = "
            f"{_transposed(self.plain, order)}",
        ]
        earlier = self.lowerer.cache.get(("plane", self.plain, plan.outer, plan.merged))
        if earlier is None or len(self.axes) != 2:
            for line in fill:
                self.emit(line)
            return matrix
        # The same array already lies on a padded plane: when it has the same
        # width, its rows from the first position on are this matrix.
        # Its sizes are defined only where its branch ran: test that first.
        code, length, width, row, column = earlier
        first = self.scalar((row * width + column) * self.merged)
        self.emit(
            f"if {code} is not None and "
            f"{self.scalar(width)} == {self.scalar(self.extents[1])} and "
            f"{first} + {self.scalar(self.count)} <= {self.scalar(length)} and "
            f"{code}.dtype == {self.dtype}:"
        )
        self.emit(
            f"    {matrix} = {code}[:, {first}:{first} + {self.scalar(self.count)}]"
        )
        self.emit("else:")
        for line in fill:
            self.emit(f"    {line}")
        return matrix

    def weight_gradient(self):
        """``out[k, a, r] = sum_q A[a, q] X[r, q + offset(k)]``."""
        plan, scalar, emit = self.plan, self.scalar, self.emit
        matrix = self.rows()

        # The offsets of the innermost window stacked as rows: fewer, wider
        # products (BLAS runs a skinny product far below its peak).
        last = plan.windows[-1]
        number = next(n for n, a in enumerate(self.axes) if a[0].window == last)
        axis, low, _ = self.axes[number]
        stride = self.strides[number]
        at = 0 if axis.step.is_negative else last.upper
        top = self.start_of(axis, low, at) * stride
        kept = self.define("stacked_length", self.length - top)
        loop = self.loops[last]
        stacked = self.names.temporary("stacked")
        emit(
            f"{stacked} = np.empty({self.shape([_size(last), self.rest, kept])}, "
            f"dtype={self.dtype})"
        )
        emit(f"for {loop} in range({scalar(_size(last))}):")
        shift = scalar(self.start_of(axis, low, sp.Symbol(loop)) * stride)
        emit(
            f"    {stacked}[{loop}] = {self.flat}[:, {shift}:{shift} + {scalar(kept)}]"
        )

        outer_windows = list(plan.windows[:-1])
        start = self.start(outer_windows) - self.start_of(axis, low, 0) * stride
        rows = self.shape([_size(last) * self.rest, kept])
        window = f"{self.begin}:{self.begin} + {scalar(self.count)}"
        result = self.names.temporary("c")
        sizes = [_size(i) for i in outer_windows]
        emit(
            f"{result} = np.empty("
            f"{self.shape(sizes + [self.outer, _size(last) * self.rest])}, "
            f"dtype={self.dtype})"
        )
        emit("# One matrix product per outer kernel offset, on a slice of the plane;")
        emit("# 0 * inf past a row's end is caught below, so it need not warn.")
        emit("with np.errstate(invalid='ignore'):")
        depth = self.loop_over(outer_windows, "    ")
        target = result
        if outer_windows:
            target += "[" + ", ".join(self.loops[i] for i in outer_windows) + "]"
        emit(f"{depth}{self.begin} = {scalar(start)}")
        emit(
            f"{depth}np.matmul({matrix}, {stacked}.reshape({rows})[:, {window}].T, "
            f"out={target})"
        )
        produced = outer_windows + list(plan.outer) + [last] + list(plan.rest)
        split = (
            sizes
            + [_size(i) for i in plan.outer]
            + [_size(last)]
            + [_size(i) for i in plan.rest]
        )
        return f"{result}.reshape({self.shape(split)})", produced

    def correlation(self):
        """``out[a, q] = sum_k sum_c A[k, a, c] X[c, q + offset(k)]``."""
        plan = self.plan
        axes = list(plan.plain.indices)
        present = [i for i in plan.windows if i in axes]
        example = self.lowerer._example
        stack = present == list(plan.windows) and example(self.outer) > example(
            self.rest
        )
        if stack:
            code = self._stacked_windows()
        else:
            code = self._shifted_products(present)
        produced = list(plan.outer) + [a.position for a, _, _ in self.axes]
        produced += list(plan.merged)
        split, crop = self.on_rows([_size(i) for i in plan.outer])
        return f"{code}.reshape({self.shape(split)})[{', '.join(crop)}]", produced

    def _kernels(self, order_first) -> str:
        """The plain operand, contiguous, its axes in the order given."""
        axes = list(self.plan.plain.indices)
        weights = self.names.temporary("kernels")
        order = [axes.index(i) for i in order_first]
        self.emit(
            f"{weights} = np.ascontiguousarray("
            f"{_transposed(self.plain, order)}, dtype={self.dtype})"
        )
        return weights

    def _stacked_windows(self) -> str:
        """Every offset's slice of the plane stacked, then one product."""
        plan, scalar, emit = self.plan, self.scalar, self.emit
        windows = list(plan.windows)
        weights = self._kernels(list(plan.outer) + windows + list(plan.rest))
        every = _product([_size(i) for i in windows])
        stacked = self.names.temporary("stacked")
        sizes = [_size(i) for i in windows]
        emit(
            f"{stacked} = np.empty({self.shape(sizes + [self.rest, self.count])}, "
            f"dtype={self.dtype})"
        )
        emit("# Each kernel offset's slice of the plane (im2col from slices).")
        depth = self.loop_over(windows)
        picks = ", ".join(self.loops[i] for i in windows)
        emit(f"{depth}{self.begin} = {scalar(self.start(windows))}")
        emit(
            f"{depth}{stacked}[{picks}] = "
            f"{self.flat}[:, {self.begin}:{self.begin} + {scalar(self.count)}]"
        )
        result = self.names.temporary("c")
        emit(
            f"{result} = np.matmul("
            f"{weights}.reshape({self.shape([self.outer, every * self.rest])}), "
            f"{stacked}.reshape({self.shape([every * self.rest, self.count])}))"
        )
        return result

    def _shifted_products(self, present) -> str:
        """The product for an innermost window's offsets at once, then one
        shifted add per offset.

        One product per value of the outer windows keeps each temporary below
        the size past which the allocator maps fresh pages on every call.
        """
        plan, scalar, emit = self.plan, self.scalar, self.emit
        windows = list(plan.windows)
        weights = self._kernels(present + list(plan.outer) + list(plan.rest))
        outer_windows = present[:-1]
        inner_windows = [i for i in windows if i not in outer_windows]
        last = present[-1] if present else None
        if last is None:
            lowest, spread = sp.S.Zero, self.largest
            stacked, every = self.outer, []
        else:
            number = next(n for n, a in enumerate(self.axes) if a[0].window == last)
            axis, low, _ = self.axes[number]
            at = last.upper if axis.step.is_negative else 0
            lowest = (
                self.start(outer_windows)
                + (self.start_of(axis, low, at) - self.start_of(axis, low, 0))
                * self.strides[number]
            )
            ends = self.start_of(axis, low, last.upper) - self.start_of(axis, low, 0)
            spread = (-ends if axis.step.is_negative else ends) * self.strides[number]
            stacked, every = _size(last) * self.outer, [_size(last)]
        span = self.define("span", spread + self.count)
        products = self.names.temporary("products")
        result = self.names.temporary("c")
        emit(f"{result} = None")
        depth = self.loop_over(outer_windows)
        picks = "".join(f"{self.loops[i]}, " for i in outer_windows)
        kernel = f"{weights}[{picks[:-2]}]" if outer_windows else weights
        low_name = self.names.temporary("lowest")
        emit(f"{depth}{low_name} = {scalar(lowest)}")
        emit(
            f"{depth}{products} = np.matmul("
            f"{kernel}.reshape({self.shape([stacked, self.rest])}), "
            f"{self.flat}[:, {low_name}:{low_name} + {scalar(span)}])"
            f".reshape({self.shape(every + [self.outer, span])})"
        )
        body = self.loop_over(inner_windows, depth)
        pick = f"{self.loops[last]}, " if last is not None else ""
        window = (
            f"{self.begin} - {low_name}:{self.begin} - {low_name} + "
            f"{scalar(self.count)}"
        )
        emit(f"{body}{self.begin} = {scalar(self.start(windows))}")
        emit(f"{body}if {result} is None:")
        emit(f"{body}    {result} = {products}[{pick}:, {window}].copy()")
        emit(f"{body}else:")
        emit(f"{body}    {result} += {products}[{pick}:, {window}]")
        return result

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

- positions summed, window indices kept (a weight gradient): one matrix product
  per offset, ``out[k, a, r] = sum_q A[a, q] X[r, q + offset(k)]``;
- positions kept, window indices summed (a forward pass, an input gradient):
  ``out[a, q] = sum_k (A[k] X)[a, q + offset(k)]``, one matrix product for all
  offsets at once and one shifted add per offset.

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


def emit_correlation(lowerer, plan: _Plan, kept) -> str:
    """Emits the statements of ``plan``; returns the array, axes in ``kept``."""
    scalar, emit, names = lowerer.scalar, lowerer.emit, lowerer.names
    for read in (plan.plain, plan.shifted):
        if str(read.base.label) not in lowerer.arrays:
            raise NotImplementedError(
                f"{lowerer.context}: {read.base.label} is not available here"
            )
    plain_code = lowerer.arrays[str(plan.plain.base.label)]
    shifted_code = lowerer.arrays[str(plan.shifted.base.label)]

    def size(index):
        return index.upper + 1

    def shape(values):
        codes = [scalar(v) for v in values]
        return "(" + ", ".join(codes) + ("," if len(codes) == 1 else "") + ")"

    def define(hint, expr):
        name = names.temporary(hint)
        emit(f"{name} = {scalar(expr)}")
        symbol = sp.Symbol(name)
        lowerer.scalars[symbol] = name
        return symbol

    # The padded plane's extents and pads are named once, for readable offsets.
    axes = []
    for axis in plan.axes:
        low = axis.pad_low if axis.pad_low.is_Atom else define("low", axis.pad_low)
        extent = define("extent", axis.extent)
        axes.append((axis, low, extent))
    merged = _product([size(i) for i in plan.merged])
    extents = [extent for _, _, extent in axes]
    strides = [_product(extents[n + 1 :]) * merged for n in range(len(axes))]
    # q runs over the first axis's positions and every padded row after it.
    count = define("positions", size(axes[0][0].position) * strides[0])
    plane = _product(extents) * merged

    def start_of(axis, low, window_value):
        step = axis.step * window_value if axis.window is not None else 0
        return sp.expand(axis.offset + low + step)

    largest = sp.S.Zero
    for (axis, low, _), stride in zip(axes, strides, strict=True):
        top = axis.window is not None and axis.step.is_positive
        largest += start_of(axis, low, axis.window.upper if top else 0) * stride
    length = define("flat", sp.Max(plane, largest + count))

    dtype = names.temporary("dt")
    emit(f"{dtype} = np.result_type({plain_code}, {shifted_code})")

    # The shifted tensor on its flat padded plane, axes (rest, rows..., merged).
    x_axes = list(plan.shifted.indices)
    x_order = []
    for index in plan.rest:
        x_order.append(next(n for n, p in enumerate(x_axes) if p == index))
    for axis, _, _ in axes:
        x_order.append(next(n for n, p in enumerate(x_axes) if p.has(axis.position)))
    for index in plan.merged:
        x_order.append(next(n for n, p in enumerate(x_axes) if p == index))
    rest = _product([size(i) for i in plan.rest])
    flat = names.temporary("flat")
    emit(f"{flat} = np.zeros({shape([rest, length])}, dtype={dtype})")
    inner = [size(i) for i in plan.rest] + extents + [size(i) for i in plan.merged]
    window = (
        [":"] * len(plan.rest)
        + [f"{scalar(low)}:{scalar(low + a.size)}" for a, low, _ in axes]
        + [":"] * len(plan.merged)
    )
    emit(
        f"{flat}[:, :{scalar(plane)}].reshape({shape(inner)})"
        f"[{', '.join(window)}] = {_transposed(shifted_code, x_order)}"
    )

    loops = {}
    for index in plan.windows:
        loops[index] = names.name(("loop", index), str(index.label))
        lowerer.scalars[sp.Symbol(loops[index])] = loops[index]
    start = sp.S.Zero
    for (axis, low, _), stride in zip(axes, strides, strict=True):
        value = sp.Symbol(loops[axis.window]) if axis.window is not None else 0
        start += start_of(axis, low, value) * stride
    begin = names.temporary("start")
    slice_ = f"{flat}[:, {begin}:{begin} + {scalar(count)}]"
    outer = _product([size(i) for i in plan.outer])

    if plan.positions_summed:
        # The plain operand on the same q, zero past each row's end.
        matrix = names.temporary("rows")
        emit(f"{matrix} = np.zeros({shape([outer, count])}, dtype={dtype})")
        a_axes = list(plan.plain.indices)
        order = [a_axes.index(i) for i in plan.outer]
        order += [a_axes.index(a.position) for a, _, _ in axes]
        order += [a_axes.index(i) for i in plan.merged]
        inner = (
            [size(i) for i in plan.outer]
            + [size(axes[0][0].position)]
            + extents[1:]
            + [size(i) for i in plan.merged]
        )
        crop = (
            [":"] * (len(plan.outer) + 1)
            + [f":{scalar(size(a.position))}" for a, _, _ in axes[1:]]
            + [":"] * len(plan.merged)
        )
        emit(
            f"{matrix}.reshape({shape(inner)})[{', '.join(crop)}] = "
            f"{_transposed(plain_code, order)}"
        )
        result = names.temporary("c")
        emit(
            f"{result} = np.empty("
            f"{shape([size(i) for i in plan.windows] + [outer, rest])}, dtype={dtype})"
        )
        emit("# One matrix product per kernel offset, on a slice of the flat plane.")
        depth = _loops(lowerer, plan.windows, loops)
        picks = ", ".join(loops[i] for i in plan.windows)
        emit(f"{depth}{begin} = {scalar(start)}")
        emit(f"{depth}np.matmul({matrix}, {slice_}.T, out={result}[{picks}])")
        produced = list(plan.windows) + list(plan.outer) + list(plan.rest)
        split = (
            [size(i) for i in plan.windows]
            + [size(i) for i in plan.outer]
            + [size(i) for i in plan.rest]
        )
        code = f"{result}.reshape({shape(split)})"
    else:
        # The plain operand as one (outer, rest) matrix per kernel offset.
        weights = names.temporary("kernels")
        a_axes = list(plan.plain.indices)
        present = [i for i in plan.windows if i in a_axes]
        order = [a_axes.index(i) for i in present]
        order += [a_axes.index(i) for i in plan.outer]
        order += [a_axes.index(i) for i in plan.rest]
        split = [size(i) for i in present] + [outer, rest]
        emit(
            f"{weights} = np.ascontiguousarray("
            f"{_transposed(plain_code, order)}, dtype={dtype}).reshape({shape(split)})"
        )
        # Every offset's product at once: one large BLAS call, then one
        # shifted add per offset instead of one small product per offset.
        products = names.temporary("products")
        width = define("width", largest + count)
        every = [size(i) for i in present]
        stacked = shape([_product(every) * outer, rest])
        emit(
            f"{products} = np.matmul({weights}.reshape({stacked}), "
            f"{flat}[:, :{scalar(width)}]).reshape({shape(every + [outer, width])})"
        )
        result = names.temporary("c")
        emit(f"{result} = np.zeros({shape([outer, count])}, dtype={dtype})")
        emit("# One shifted add per kernel offset.")
        depth = _loops(lowerer, plan.windows, loops)
        picks = "".join(f"{loops[i]}, " for i in present)
        emit(f"{depth}{begin} = {scalar(start)}")
        window = f"{begin}:{begin} + {scalar(count)}"
        emit(f"{depth}{result} += {products}[{picks}:, {window}]")
        produced = list(plan.outer) + [a.position for a, _, _ in axes]
        produced += list(plan.merged)
        split = (
            [size(i) for i in plan.outer]
            + [size(axes[0][0].position)]
            + extents[1:]
            + [size(i) for i in plan.merged]
        )
        crop = (
            [":"] * (len(plan.outer) + 1)
            + [f":{scalar(size(a.position))}" for a, _, _ in axes[1:]]
            + [":"] * len(plan.merged)
        )
        code = f"{result}.reshape({shape(split)})[{', '.join(crop)}]"

    order = [produced.index(i) for i in kept]
    final = names.temporary("c")
    transposed = _transposed(code, order)
    if transposed == code and plan.positions_summed:
        emit(f"{final} = {code}")
    else:
        emit(f"{final} = np.ascontiguousarray({transposed})")
    return final


def _transposed(code, order) -> str:
    if list(order) == sorted(order):
        return code
    return f"{code}.transpose({', '.join(str(n) for n in order)})"


def _loops(lowerer, windows, loops) -> str:
    depth = ""
    for index in windows:
        lowerer.emit(
            f"{depth}for {loops[index]} in range({lowerer.scalar(index.upper + 1)}):"
        )
        depth += "    "
    return depth

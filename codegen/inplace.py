"""In-place statements: a large elementwise result written into a dead array.

A statement such as ``grad_xs = output_grad*v8[None, :] + v2*v9[None, :] + c``
makes NumPy allocate a fresh array for every operation, and a fresh array of
many megabytes costs about twice a reused one (its pages fault in). When an
operand the statement reads in full (``v2``) is an array the pass made itself
and nothing reads it afterwards, the statement can be computed inside it:

    v2 *= v9[None, :]
    v2 += output_grad*v8[None, :]
    v2 += c
    grad_xs = v2

The lowerer proposes such a rewrite (``plan``) while it emits, when it cannot
yet know what later statements read; ``resolve`` decides once the whole
function is known. A rewrite is taken only when the array written into is one
the pass allocated (never an input, a parameter, a state or ``output_grad``),
no later statement reads it or any array that may share its memory, and it
appears once in the statement.
"""

from __future__ import annotations

import re

import sympy as sp

# Below this many elements at the model's example sizes a fresh array is cheap,
# and an in-place rewrite would only make the code longer.
MIN_ELEMENTS = 2**15

# Elements of a block of rows of an in-place loop: 128 KiB in float32, a few
# such blocks fit in a core's L2 cache.
BLOCK_ELEMENTS = 2**15

_ASSIGNED = re.compile(r"\s*(\w+) = (.*)$")
_EINSUM = re.compile(r"np\.einsum\('([a-z,]*)->([a-z]*)'")


class InPlace(str):
    """A statement that reads as its ordinary form, with in-place alternatives.

    Its string value is the ordinary statement, so that code that does not
    resolve it still emits a correct line.

    Attributes:
        target: the name the statement assigns.
        options: ``[(donor, lines)]``: the statement computed inside ``donor``,
            in order of preference.
    """

    def __new__(cls, line, target, options):
        value = super().__new__(cls, line)
        value.target = target
        value.options = options
        return value


class _UnplannableError(Exception):
    pass


def _occurrences(expr, read) -> int:
    return sum(1 for node in sp.preorder_traversal(expr) if node == read)


def plan(lowerer, expr, indices, target, line):
    """``line`` (``target = expr``) as an ``InPlace``, or ``line`` unchanged.

    Args:
        lowerer: the ``Lowerer`` emitting the statement; codes the operands.
        expr: the statement's restructured expression, sum-free.
        indices: the result's indices, in the order of its axes.
        target: the name assigned.
        line: the ordinary statement.
    """
    indices = tuple(indices)
    if expr.has(sp.Piecewise) or expr.atoms(sp.Rel):
        return line
    elements = 1
    for index in indices:
        elements *= lowerer._example(index.upper + 1)
    if elements < MIN_ELEMENTS:
        return line
    options = []
    reads = sorted(expr.atoms(sp.Indexed), key=sp.srepr)
    for read in reads:
        donor = lowerer.arrays.get(str(read.base.label))
        if lowerer.owned.get(donor) != indices or tuple(read.indices) != indices:
            continue
        if _occurrences(expr, read) != 1 or donor == target:
            continue
        try:
            lines = _into(lowerer, expr, read, donor, indices)
        except _UnplannableError:
            continue
        if len(lines) > 1 and len(indices) > 1:
            lines = _tiled(lowerer, expr, read, donor, indices) or lines
        options.append((donor, [*lines, f"{target} = {donor}"]))
    if not options:
        return line
    return InPlace(line, target, options)


def _into(lowerer, expr, read, donor, indices) -> list[str]:
    """The in-place updates that leave ``expr`` in ``donor``, which holds
    ``read`` to begin with."""
    if expr == read:
        return []
    if not (expr.is_Add or expr.is_Mul):
        raise _UnplannableError
    holding = next(arg for arg in expr.args if arg.has(read))
    others = [arg for arg in expr.args if arg is not holding]
    full = set(indices)
    large = [arg for arg in others if arg.atoms(sp.Idx) == full]
    small = _grouped([arg for arg in others if arg.atoms(sp.Idx) != full], full)

    def code(value):
        return lowerer.elementwise(value, indices)

    if expr.is_Add:
        small = [sp.Add(*group) for group in small]
        values = large + small
        if holding.could_extract_minus_sign() and values:
            # b - a: a into the donor, then the donor subtracted from b.
            lines = _into(lowerer, -holding, read, donor, indices)
            first, *values = values
            lines.append(f"np.subtract({code(first)}, {donor}, out={donor})")
        else:
            lines = _into(lowerer, holding, read, donor, indices)
        for value in values:
            if value.could_extract_minus_sign():
                lines.append(f"{donor} -= {code(-value)}")
            else:
                lines.append(f"{donor} += {code(value)}")
        return lines
    lines = _into(lowerer, holding, read, donor, indices)
    numerators, denominators = [], []
    for value in large:
        if value.is_Pow and value.exp == -1:
            denominators.append(value.base)
        else:
            numerators.append(value)
    numerators += [sp.Mul(*group) for group in small]
    for value in numerators:
        lines.append(f"{donor} *= {code(value)}")
    for value in denominators:
        lines.append(f"{donor} /= {code(value)}")
    return lines


def _plain(read, index) -> bool:
    """Whether ``read`` reads its whole array with ``index`` on its first axis,
    so that ``array[rows]`` is its block of rows."""
    return (
        read.indices[0] == index
        and len(set(read.indices)) == len(read.indices)
        and all(
            isinstance(i, sp.Idx) and sp.expand(i.upper - (size - 1)) == 0
            for i, size in zip(read.indices, read.base.shape, strict=True)
        )
    )


def _tiled(lowerer, expr, read, donor, indices):
    """The updates of ``_into`` as a loop over blocks of rows, or None.

    Each update is elementwise, so it may run a block of rows at a time; a
    block small enough to stay in cache from one update to the next costs
    one pass over memory for all of them, and the temporaries of a block are
    small. Every read over the first axis must be a whole array along it.
    """
    # The same names in every such loop of a function: each loop binds them
    # before it reads them.
    rows, block, start, step = (
        lowerer.names.name(("block loop", word), word)
        for word in ("rows", "block", "start", "step")
    )
    first = indices[0]
    replacements, added = {}, []
    for other in expr.atoms(sp.Indexed):
        if first not in other.atoms(sp.Idx):
            continue
        if not _plain(other, first):
            return None
        label = f"{other.base.label}__{rows}"
        code = lowerer.arrays.get(str(other.base.label))
        if code is None:
            return None
        lowerer.arrays[label] = f"{code}[{rows}]"
        added.append(label)
        base = sp.IndexedBase(label, shape=other.base.shape)
        replacements[other] = base[other.indices]
    bare = expr.xreplace(replacements)
    lines, cache = len(lowerer.lines), dict(lowerer.cache)
    try:
        updates = _into(lowerer, bare, replacements[read], block, indices)
    except _UnplannableError:
        updates = None
    if len(lowerer.lines) != lines or bare.xreplace(
        {r: sp.Symbol("r") for r in bare.atoms(sp.Indexed)}
    ).atoms(sp.Idx):
        # An update needed a named intermediate (which would be computed
        # outside the loop) or an index's values: keep whole arrays.
        del lowerer.lines[lines:]
        updates = None
    lowerer.cache = cache
    for label in added:
        del lowerer.arrays[label]
    if updates is None:
        return None
    size = lowerer.scalar(first.upper + 1)
    return [
        "# A block of rows at a time: it stays in cache from one update to the",
        "# next, and the temporaries of a block are small.",
        f"{step} = max(1, {BLOCK_ELEMENTS} // {donor}[0].size)",
        f"for {start} in range(0, {size}, {step}):",
        f"    {rows} = slice({start}, {start} + {step})",
        # A view: updating it updates the donor, with no copy back.
        f"    {block} = {donor}[{rows}]",
        *("    " + update for update in updates),
    ]


def _grouped(small, full) -> list[list]:
    """The small operands in groups that are combined before they meet the
    donor: all together, unless together they span every axis (a per-row
    and a per-column factor), which would make an array as large as the
    donor; then one group per set of axes."""
    if not small:
        return []
    spanned = set().union(*(arg.atoms(sp.Idx) for arg in small))
    if spanned != full:
        return [small]
    groups: dict = {}
    for arg in small:
        groups.setdefault(frozenset(arg.atoms(sp.Idx)), []).append(arg)
    return list(groups.values())


def _einsum_is_fresh(rhs) -> bool:
    """Whether an ``np.einsum`` call allocates its result: it reads two operands
    or reduces an index. A one-operand einsum that reduces nothing may return
    a view of its operand."""
    match = _EINSUM.match(rhs)
    if match is None:
        return False
    inputs, output = match.groups()
    return "," in inputs or set(output) != set(inputs.replace(",", ""))


def _product_is_fresh(rhs) -> bool:
    """Whether ``rhs`` is a matrix product (perhaps reshaped) at its top level,
    which always allocates its result."""
    depth = 0
    for position, char in enumerate(rhs):
        depth += char in "(["
        depth -= char in ")]"
        if depth == 0 and rhs.startswith(" @ ", position):
            return True
    return False


def resolve(lines, owned) -> list[str]:
    """The statements with each ``InPlace`` taken in place where that is safe.

    Args:
        lines: the function's statements, its return statement last.
        owned: the names of the arrays the function allocates itself.

    A donor is safe when no later statement reads it or any name that may
    share its memory: one assigned from a statement that mentions it, unless
    that statement allocates (an array of ``owned`` or an einsum that
    reduces), and the targets of earlier in-place statements in it.
    """
    texts = [str(line) for line in lines]
    sharing: dict[str, set] = {}
    resolved = []
    for position, line in enumerate(lines):
        later = "\n".join(texts[position + 1 :])
        chosen = None
        if isinstance(line, InPlace):
            for donor, updates in line.options:
                names = {donor} | sharing.get(donor, set())
                # Nothing may read the donor's memory later, nor, under another
                # name, in the statement itself.
                here = str(line).split(" = ", 1)[1]
                if not any(
                    re.search(rf"\b{name}\b", later)
                    or (name != donor and re.search(rf"\b{name}\b", here))
                    for name in names
                ):
                    chosen = (donor, updates)
                    break
        if chosen is None:
            resolved.append(str(line))
            _record_sharing(str(line), sharing, owned)
            continue
        donor, updates = chosen
        resolved.append(f"# In place: {donor} is not read after this statement.")
        resolved += updates
        group = {donor} | sharing.get(donor, set())
        for name in group | {line.target}:
            sharing[name] = group | {line.target}
    return resolved


def _record_sharing(line, sharing, owned) -> None:
    """Notes that the name ``line`` assigns may share memory with what it reads."""
    match = _ASSIGNED.match(line)
    if match is None:
        return
    target, rhs = match.groups()
    if target in owned or _einsum_is_fresh(rhs) or _product_is_fresh(rhs):
        return
    group = set(sharing.get(target, {target}))
    for name in set(re.findall(r"\b[A-Za-z_]\w*\b", rhs)):
        group |= sharing.get(name, {name})
    for name in group:
        sharing[name] = group

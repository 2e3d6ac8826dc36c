"""The index notation in which layer models are written.

Notation, stated once and used everywhere in the library:

- A *size* is a positive integer SymPy symbol (B batch, N features, C input
  channels, O output channels, H and W rows and columns, K kernel width). One
  derivation serves every shape.
- An *index* is a ``sympy.Idx`` running over ``0 .. size - 1``. Index names follow
  the math: b batch, n feature, c/o channels, h/w rows/columns, kh/kw kernel
  offsets.
- A *tensor* is a ``sympy.IndexedBase`` with a declared shape. ``x[b, n]`` reads
  one entry. An axis may be read at an affine index such as ``h + kh - P``; a read
  outside the tensor's range is zero, which is how zero padding is written.
- A *definition* ``name[indices] = expression`` names an intermediate; its
  expression reads inputs, parameters, state, constants and earlier definitions,
  and may sum over indices with ``sympy.Sum(body, (index, 0, size - 1))``.
- ``jacobian``: the full derivative ``d out[I] / d x[K]``, written with Kronecker
  deltas. ``vjp``: the vector-Jacobian product ``sum_I output_grad[I] *
  d out[I] / d x[K]``, which is what a backward pass computes.
- ``output_grad`` is the upstream gradient a backward pass receives;
  ``input_grad`` and ``grad_<param>`` are what it returns. The adjoint of an
  intermediate ``t`` is written ``grad_t``.
"""

from __future__ import annotations

import builtins
import copy
import keyword
from dataclasses import dataclass, field

import sympy as sp
from sympy.concrete.expr_with_limits import ExprWithLimits


class _Required:
    """The default of a constructor argument the user must give."""

    def __repr__(self):
        return "REQUIRED"


REQUIRED = _Required()

# The names of the gradients themselves; every other name is free, and the code
# generator renames what would clash with its own identifiers.
RESERVED_NAMES = frozenset({"output_grad", "input_grad"})


class Maximum(ExprWithLimits):
    """``max`` of a body over indices: ``Maximum(x[b, n], (n, 0, N - 1))``.

    A selection: its derivative is the body's derivative at the position of
    the maximum, the first one in row-major order of the indices when several
    entries tie (as ``numpy.argmax`` and PyTorch's max pooling choose). The
    engine names that position as integer tensors ``<name>_argmax_<index>``.
    A Maximum must be the whole expression of a definition.
    """

    def _latex(self, printer):
        indices = ", ".join(printer._print(limit[0]) for limit in self.limits)
        return rf"\max_{{{indices}}} {printer._print(self.function)}"


def argmax_bases(definition) -> list:
    """``(index, IndexedBase)`` of each argmax tensor of a Maximum definition."""
    expr = definition.expression
    if not isinstance(expr, Maximum):
        return []
    shape = tuple(index.upper + 1 for index in definition.indices)
    return [
        (limit[0], sp.IndexedBase(f"{definition.name}_argmax_{limit[0]}", shape=shape))
        for limit in expr.limits
    ]


def select_maximum(definition, indices):
    """A Maximum definition's body at its argmax, read with ``indices``."""
    expr = definition.expression
    bound = [limit[0] for limit in expr.limits]
    positions = {
        index: base[tuple(indices)] for index, base in argmax_bases(definition)
    }
    renamed = dict(zip(definition.indices, indices, strict=True))
    body = expr.function.xreplace(renamed)
    return body.xreplace({index: positions[index] for index in bound})


def size_symbol(name: str) -> sp.Symbol:
    """A size: a positive integer symbol."""
    return sp.Symbol(name, integer=True, positive=True)


def nonnegative_symbol(name: str) -> sp.Symbol:
    """A non-negative integer symbol, such as a padding width."""
    return sp.Symbol(name, integer=True, nonnegative=True)


@dataclass(frozen=True)
class Tensor:
    """A named array of the model: input, parameter, state or random draw.

    Attributes:
        base: the SymPy ``IndexedBase`` that reads it.
        indices: its canonical indices, one per axis; they give its shape.
        role: "input", "parameter", "state", "random" or "output_grad".
        attribute: the layer attribute that holds it ("W", "gamma", ...).
        grad_attribute: for parameters, the attribute of its gradient.
        init: for parameters and state, how the runtime fills it: a string
            understood by the emitter ("zeros", "ones", "uniform").
    """

    base: sp.IndexedBase
    indices: tuple
    role: str
    attribute: str = ""
    grad_attribute: str = ""
    init: str = ""
    enabled_by: str = ""

    @property
    def name(self) -> str:
        return str(self.base.label)

    @property
    def shape(self) -> tuple:
        return tuple(index.upper + 1 for index in self.indices)

    def __getitem__(self, indices):
        return self.base[indices]


@dataclass(frozen=True)
class Definition:
    """``name[indices] = expression``: one named step of a forward pass."""

    name: str
    indices: tuple
    expression: sp.Expr
    base: sp.IndexedBase

    def __getitem__(self, indices):
        return self.base[indices]

    @property
    def shape(self) -> tuple:
        return tuple(index.upper + 1 for index in self.indices)


@dataclass(frozen=True)
class Update:
    """``state[indices] = expression`` applied after a training forward pass."""

    state: Tensor
    indices: tuple
    expression: sp.Expr


@dataclass(frozen=True)
class Constant:
    """A scalar of the layer: a constructor argument or a class attribute.

    Attributes:
        symbol: the SymPy symbol the formulas use.
        default: its default value (None: the argument is required).
        kind: "argument" (constructor argument) or "class_attribute".
        check: an optional range the runtime enforces, as ``(low, high)``.
    """

    symbol: sp.Symbol
    default: object
    kind: str
    check: tuple | None = None

    @property
    def name(self) -> str:
        return self.symbol.name


@dataclass
class Mode:
    """The definitions and state updates of one mode (train or evaluate)."""

    name: str
    definitions: list = field(default_factory=list)
    updates: list = field(default_factory=list)
    # Definitions the forward pass keeps for a backward pass on the same input.
    kept: list = field(default_factory=list)

    @property
    def output(self) -> Definition:
        return self.definitions[-1]


class ModelError(ValueError):
    """A model is written wrongly: the message names the model and the place."""


# Names a generated module imports: a model's class may not take them.
_MODULE_NAMES = (
    "np",
    "sliding_window_view",
    "Module",
    "Criterion",
    "draw_keep_mask",
    "make_generator",
)


class Model:
    """A layer written once in index notation.

    Build one by declaring sizes, indices, tensors and constants, then the
    definitions of each mode; the last definition of a mode is its output.
    """

    def __init__(self, name: str, summary: str, source: str):
        # The name becomes a class in a module that calls Python's builtins.
        if (
            not isinstance(name, str)
            or not name.isidentifier()
            or keyword.iskeyword(name)
            or name in vars(builtins)
            or name in _MODULE_NAMES
            or name.startswith("expect_")
        ):
            raise ModelError(
                "Model expects a name that can be a class in the generated module "
                f"(an identifier that is no keyword, builtin or module name); got "
                f"{name!r}"
            )
        self.name = name
        self.summary = summary
        self.source = source
        self.sizes: list[sp.Symbol] = []
        self.indices: list[sp.Idx] = []
        self.tensors: list[Tensor] = []
        self.constants: list[Constant] = []
        self.modes: dict[str, Mode] = {}
        self.arguments: list[tuple[str, object]] = []
        self.size_bindings: dict[sp.Symbol, str] = {}
        self.example_sizes: dict[sp.Symbol, int] = {}
        self.init_scale: str = "1.0"
        self.input_layout: tuple = ()
        self.argument_checks: list[tuple[str, str]] = []
        self.argument_kinds: dict[str, str] = {}
        self.size_needs: dict = {}
        self.specializations: list[tuple[str, dict, str]] = []
        # "layer": forward(input), backward(input, output_grad);
        # "criterion": forward(input, target) -> float, backward(input, target).
        self.kind = "layer"
        # True: the output keeps the (batch, features) shape the runtime
        # flattened the input to (Flatten); False: it takes the input's shape.
        self.flatten_output = False
        self._current: Mode | None = None

    # Declarations.

    def size(self, name: str, example: int, bound_to: str | None = None, needs=None):
        """Declares a size; ``example`` is used to choose contraction paths.

        ``bound_to`` computes it from the arguments and other sizes; ``needs``
        says, for the error message, what the input must be for it to be at
        least 1 ("an input at least as large as the kernel").
        """
        symbol = size_symbol(name)
        self.sizes.append(symbol)
        self.example_sizes[symbol] = example
        if bound_to is not None:
            self.size_bindings[symbol] = bound_to
        if needs is not None:
            self.size_needs[symbol] = needs
        return symbol

    def derived_size(self, name: str, formula: str, example: int):
        """A non-negative integer computed by the runtime from the arguments."""
        symbol = nonnegative_symbol(name)
        self.sizes.append(symbol)
        self.example_sizes[symbol] = example
        self.size_bindings[symbol] = formula
        return symbol

    def index(self, name: str, size: sp.Symbol) -> sp.Idx:
        """Declares an index running over ``0 .. size - 1``."""
        index = sp.Idx(name, size)
        self.indices.append(index)
        return index

    def argument(self, name: str, default=REQUIRED, kind=None):
        """A constructor argument that is not a formula constant.

        ``kind`` names the runtime check: "positive_int", "optional_positive_int"
        (None or a positive int), "padding" (a non-negative int or "same") or
        "bool"; arguments a size is bound to are positive ints by default.
        """
        self.arguments.append((name, default))
        if kind is not None:
            self.argument_kinds[name] = kind

    def require(self, condition: str, expected: str) -> None:
        """A check of the constructor arguments, as Python over their names."""
        self.argument_checks.append((condition, expected))

    def constant(self, name, default, kind="argument", check=None):
        """A scalar constant; returns its symbol."""
        symbol = sp.Symbol(name, real=True)
        self.constants.append(Constant(symbol, default, kind, check))
        if kind == "argument":
            self.arguments.append((name, default))
        return symbol

    def _tensor(self, name, indices, role, **extra) -> Tensor:
        if name in RESERVED_NAMES:
            raise ModelError(f"model {self.name}: the name {name!r} is reserved")
        indices = tuple(indices)
        shape = tuple(index.upper + 1 for index in indices)
        tensor = Tensor(sp.IndexedBase(name, shape=shape), indices, role, **extra)
        self.tensors.append(tensor)
        return tensor

    def input(self, name, indices, layout) -> Tensor:
        """The layer's input; ``layout`` names its axes for error messages."""
        self.input_layout = tuple(layout)
        return self._tensor(name, indices, "input")

    def target(self, name, indices, classes=False):
        """A criterion's target: same shape as the input, or, with ``classes``,
        also accepted as integer class indices (batch,) and made one-hot."""
        return self._tensor(
            name, indices, "target", attribute=name, init="classes" if classes else ""
        )

    def parameter(
        self, name, indices, attribute, grad_attribute, init="uniform", enabled_by=""
    ):
        """A learnable parameter; its gradient is kept in ``grad_attribute``."""
        return self._tensor(
            name,
            indices,
            "parameter",
            attribute=attribute,
            grad_attribute=grad_attribute,
            init=init,
            enabled_by=enabled_by,
        )

    def state(self, name, indices, init) -> Tensor:
        """A buffer that training updates (moving averages)."""
        return self._tensor(name, indices, "state", attribute=name, init=init)

    def random(self, name, indices) -> Tensor:
        """A random 0/1 keep mask drawn in a training forward pass."""
        return self._tensor(name, indices, "random", attribute=name)

    # Definitions.

    def mode(self, name: str) -> Model:
        """Starts the definitions of mode ``name``; use as ``with model.mode(..)``."""
        self._current = self.modes.setdefault(name, Mode(name))
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self._current = None
        return False

    def define(self, name: str, indices, expression) -> Definition:
        """``name[indices] = expression``; returns a readable handle."""
        if self._current is None:
            raise ModelError(f"model {self.name}: define {name!r} inside a mode")
        if name in RESERVED_NAMES or any(t.name == name for t in self.tensors):
            raise ModelError(
                f"model {self.name}: definition {name!r} clashes with a reserved "
                "name or a tensor"
            )
        indices = tuple(indices)
        shape = tuple(index.upper + 1 for index in indices)
        base = sp.IndexedBase(name, shape=shape)
        definition = Definition(name, indices, sp.sympify(expression), base)
        self._current.definitions.append(definition)
        return definition

    def update(self, state: Tensor, indices, expression) -> None:
        """A state update applied after the current mode's forward pass."""
        if self._current is None:
            raise ModelError(f"model {self.name}: update {state.name!r} inside a mode")
        self._current.updates.append(
            Update(state, tuple(indices), sp.sympify(expression))
        )

    def keep_for_backward(self, *definitions: Definition) -> None:
        """The current mode's forward pass keeps these definitions, and a
        backward pass on the same input object reads them instead of computing
        them again, as PyTorch keeps a batch normalization's mean and inverse
        standard deviation.

        Meant for small definitions (per-feature statistics) that cost full
        passes over the input; for a Maximum, its argmax arrays are kept. The
        generated layer recognizes the input by identity, shape and dtype, so
        a change made in place between forward and backward is not seen: the
        gradient then mixes what forward kept with the new values.
        """
        if self._current is None:
            raise ModelError(f"model {self.name}: keep_for_backward inside a mode")
        defined = {d.name: d for d in self._current.definitions}
        roles = {tensor.name: tensor.role for tensor in self.tensors}
        for definition in definitions:
            if getattr(definition, "name", None) not in defined:
                raise ModelError(
                    f"model {self.name}: keep_for_backward expects definitions of "
                    f"mode {self._current.name!r}; got {definition!r}"
                )
            # The layer recognizes a kept value by its input and settings only:
            # one that reads a parameter or a state would go stale silently
            # when an optimizer steps between forward and backward.
            pending, seen = [definition.name], set()
            while pending:
                name = pending.pop()
                if name in seen:
                    continue
                seen.add(name)
                if roles.get(name, "input") != "input":
                    raise ModelError(
                        f"model {self.name}: keep_for_backward expects definitions "
                        f"that read only the input; {definition.name!r} reads "
                        f"{roles[name]} {name!r}"
                    )
                if name in defined:
                    pending += [
                        str(read.base.label)
                        for read in defined[name].expression.atoms(sp.Indexed)
                    ]
            self._current.kept.append(definition.name)

    def specialize(self, condition: str, substitution: dict, label: str) -> None:
        """Also derive the backward pass with ``substitution`` applied, used at
        run time when ``condition`` (Python over the arguments) holds.

        With a stride of 1 a strided read becomes invertible, and its gradient a
        shifted read instead of a scatter.
        """
        self.specializations.append((condition, dict(substitution), label))

    def specialized(self, substitution: dict) -> Model:
        """A copy whose definitions and updates have ``substitution`` applied."""
        clone = copy.copy(self)
        clone.modes = {}
        for name, mode in self.modes.items():
            clone.modes[name] = Mode(
                name,
                [
                    Definition(
                        d.name, d.indices, d.expression.xreplace(substitution), d.base
                    )
                    for d in mode.definitions
                ],
                [
                    Update(u.state, u.indices, u.expression.xreplace(substitution))
                    for u in mode.updates
                ],
            )
        return clone

    # Queries.

    def tensor(self, name: str) -> Tensor:
        for tensor in self.tensors:
            if tensor.name == name:
                return tensor
        raise KeyError(name)

    @property
    def input_tensor(self) -> Tensor:
        return next(t for t in self.tensors if t.role == "input")

    @property
    def parameters(self) -> list[Tensor]:
        return [t for t in self.tensors if t.role == "parameter"]

    @property
    def differentiable(self) -> list[Tensor]:
        """The tensors a backward pass returns gradients for: input, parameters."""
        return [t for t in self.tensors if t.role in ("input", "parameter")]

    def __repr__(self):
        return f"Model({self.name!r}, modes={list(self.modes)})"

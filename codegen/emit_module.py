"""Emission: one Python module per model, a class with the runtime contract.

The class follows ``layers.module.Module``: its constructor checks and stores
the arguments and draws the parameters, ``_compute_output`` runs the forward
pass of the current mode, ``_compute_input_grad`` runs the derived backward
pass and keeps the parameter gradients it computed for
``_update_parameters_grad``, which adds them to the accumulated ones.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import sympy as sp

from codegen.inplace import resolve
from codegen.lower import Lowerer
from codegen.names import Letters, Names
from derivations.calculus import FreshIndices, normalize
from derivations.derive import Backward, check_model, derive_backward
from derivations.errors import located
from derivations.notation import REQUIRED, Maximum, Model, argmax_bases

COMMAND = "python -m codegen"


@dataclass
class Emitted:
    """A generated module's text and what the docs need to show of it."""

    name: str
    text: str
    letters: list = field(default_factory=list)
    backwards: dict = field(default_factory=dict)
    functions: dict = field(default_factory=dict)


def _indent(lines, depth):
    pad = "    " * depth
    return [pad + line if line else "" for line in lines]


def _pystr(value) -> str:
    return repr(value)


def _reads(name: str, text: str) -> bool:
    """Whether code ``text`` reads ``name``: neither a keyword argument
    ``name=`` nor an attribute ``.name`` is a read."""
    return re.search(rf"(?<!\.)\b{name}\b(?!\s*=[^=])", text) is not None


def _live(body):
    """``body`` without the top-level assignments nothing after them reads,
    and the comments that introduce them: unused bindings of sizes and
    tensors at the top of a pass, and intermediates left unread.

    The lowering names an intermediate when it first meets it; a later
    rewrite (a sum computed once for two forms of one expression, a result
    taken in place) can leave the name unread. Only straight-line statements
    go: a line inside a loop or a branch, or one that draws random numbers,
    always stays.
    """
    kept, later = [], ""
    dropping = False
    for line in reversed(body):
        if dropping and line.startswith("#"):
            continue
        dropping = False
        match = re.match(r"(\w+) = (.*)$", line)
        if (
            match is not None
            and match.group(2).count("(") == match.group(2).count(")")
            and "generator" not in line
            and "draw_" not in line
            and not _reads(match.group(1), later)
        ):
            dropping = True
            continue
        kept.append(line)
        later += "\n" + line
    return list(reversed(kept))


class _ModuleEmitter:
    def __init__(self, model: Model, module_name: str):
        self.model = model
        self.module_name = module_name
        self.layer = model.name
        self.letters = Letters(model.indices)
        self.arguments = [name for name, _ in model.arguments]
        self.flatten = "..." in model.input_layout
        self.backwards: dict[str, Backward] = {}
        self.functions: dict[str, list[str]] = {}
        self.imports: set[str] = set()

    # Scopes.

    def _scope(self):
        """Identifiers for the sizes, constants and tensors of one function."""
        names = Names()
        scalars = {}
        for size in self.model.sizes:
            scalars[size] = names.name(("size", size.name), size.name)
        for constant in self.model.constants:
            scalars[constant.symbol] = names.name(
                ("constant", constant.name), constant.name
            )
        arrays = {}
        # The input first: its name is the pass functions' first parameter.
        tensors = sorted(self.model.tensors, key=lambda t: t.role != "input")
        for tensor in tensors:
            arrays[tensor.name] = names.name(("tensor", tensor.name), tensor.name)
        return names, scalars, arrays

    @property
    def input_code(self) -> str:
        """The identifier of the input inside the pass functions."""
        return self._scope()[2][self.model.input_tensor.name]

    def _argument_code(self, formula: str) -> str:
        pattern = r"\b(" + "|".join(map(re.escape, self.arguments)) + r")\b"
        if not self.arguments:
            return formula
        return re.sub(pattern, r"self.\1", formula)

    def _prologue(self, lowerer: Lowerer, scalars, arrays, mode: str, backward: bool):
        """Binds sizes, constants and tensors at the top of a pass."""
        model = self.model
        input_tensor = model.input_tensor
        input_code = arrays[input_tensor.name]
        lines = [f"dtype = {input_code}.dtype"]
        bound_from_input = {}
        for axis, index in enumerate(input_tensor.indices):
            size = index.upper + 1
            if isinstance(size, sp.Symbol) and size not in bound_from_input:
                bound_from_input[size] = axis
        for size in model.sizes:
            code = scalars[size]
            if size in model.size_bindings and size not in bound_from_input:
                formula = model.size_bindings[size]
                lines.append(f"{code} = {self._argument_code(formula)}")
                reads_sizes = any(
                    re.search(rf"\b{other.name}\b", formula) for other in model.sizes
                )
                if reads_sizes and size.is_positive:
                    lines += self._size_check(size, code, input_code)
            elif size in bound_from_input:
                lines.append(f"{code} = {input_code}.shape[{bound_from_input[size]}]")
        for constant in model.constants:
            lines.append(f"{scalars[constant.symbol]} = self.{constant.name}")
        for tensor in model.tensors:
            code = arrays[tensor.name]
            if tensor.role == "parameter" and tensor.enabled_by:
                shape = lowerer._shape(tensor.indices)
                lines.append(
                    f"{code} = self.{tensor.attribute}.astype(dtype, copy=False) "
                    f"if self.{tensor.attribute} is not None "
                    f"else np.zeros({shape}, dtype=dtype)"
                )
            elif tensor.role == "parameter":
                # In the input's dtype: a float64 kernel would promote every
                # float32 product (and its BLAS call) to float64.
                lines.append(
                    f"{code} = self.{tensor.attribute}.astype(dtype, copy=False)"
                )
            elif tensor.role == "state":
                # Read in the input's dtype, as parameters are: statistics kept
                # in float64 would promote a float32 pass to float64.
                lines.append(
                    f"{code} = self.{tensor.attribute}.astype(dtype, copy=False)"
                )
            elif tensor.role == "random" and mode == "train":
                shape = lowerer._shape(tensor.indices)
                if backward:
                    lines += self._mask_check(tensor, code, shape)
                    lines.append(f"{code} = {code}.reshape({shape})")
                else:
                    self.imports.add("draw_keep_mask")
                    constant = self._probability_constant()
                    lines.append(
                        f"{code} = draw_keep_mask(self.generator, {shape}, "
                        f"{scalars[constant]}, dtype)"
                    )
                    kept_shape = "self._input_shape" if self.flatten else shape
                    lines.append(
                        f"self.{tensor.attribute} = {code}.reshape({kept_shape})"
                    )
        return lines

    def _size_check(self, size, code, input_code) -> list[str]:
        """Raises when a computed size (an output width) is below 1."""
        formula = self.model.size_bindings[size]
        needs = self.model.size_needs.get(size)
        expected = needs or f"an input for which {size} = {formula} is at least 1"
        return [
            f"if {code} < 1:",
            "    raise ValueError(",
            f'        f"{self.layer} expects {expected}; got input of shape "',
            f'        f"{{{input_code}.shape}}, which gives {size} = {{{code}}}"',
            "    )",
        ]

    def _input_fits(self) -> list[str]:
        """In ``_compute_input_grad``: the input is checked before output_grad,
        whose expected shape it gives."""
        lines = []
        for size in self.model.sizes:
            formula = self.model.size_bindings.get(size)
            if formula is None or not size.is_positive:
                continue
            if not any(
                re.search(rf"\b{other.name}\b", formula) for other in self.model.sizes
            ):
                continue
            code = self._size_code(size)
            lines += [f"{size.name} = {code}"] + self._size_check(size, size.name, "x")
        return lines

    def _probability_constant(self):
        for constant in self.model.constants:
            if constant.check == (0.0, 1.0):
                return constant.symbol
        raise NotImplementedError(
            f"model {self.model.name}: a random mask needs a probability constant "
            "declared with check=(0.0, 1.0)"
        )

    def _state_init(self, tensor, shape):
        attribute = tensor.attribute
        fill = {"zeros": "np.zeros", "ones": "np.ones"}.get(tensor.init)
        if fill is None:
            raise NotImplementedError(
                f"model {self.model.name}: state {tensor.name} with init "
                f"{tensor.init!r}"
            )
        return [
            f"if self.{attribute} is None:",
            f"    self.{attribute} = {fill}({shape}, dtype=dtype)",
            f"if self.{attribute}.shape != {shape}:",
            "    raise ValueError(",
            f'        f"{self.layer} holds {attribute} of shape "',
            f'        f"{{self.{attribute}.shape}}; "',
            f'        f"got input of shape {{x.shape}}, which needs {{{shape}}}"',
            "    )",
        ]

    def prepare_state(self) -> list[str]:
        """``_prepare_state``: creates the state on first use and checks its shape."""
        states = [t for t in self.model.tensors if t.role == "state"]
        if not states:
            return []
        names, scalars, arrays = self._scope()
        lowerer = Lowerer(
            names, self.letters, scalars, arrays, self.model.example_sizes, ""
        )
        lines = []
        for tensor in states:
            lines += self._state_init(tensor, lowerer._shape(tensor.indices))
        bindings = ["dtype = x.dtype"] + [
            f"{scalars[size]} = x.shape[{axis}]"
            for axis, size in self._input_sizes().items()
        ]
        return ["", "    def _prepare_state(self, x):"] + _indent(
            _live(bindings + lines), 2
        )

    def _input_sizes(self):
        sizes = {}
        for axis, index in enumerate(self.model.input_tensor.indices):
            sizes.setdefault(axis, index.upper + 1)
        return {axis: size for axis, size in sizes.items()}

    def _mask_check(self, tensor, code, shape):
        attribute = tensor.attribute
        expected = "self._input_shape" if self.flatten else shape
        return [
            f"{code} = self.{attribute}",
            f"if {code} is None:",
            "    raise ValueError(",
            f'        "{self.layer}.backward in training mode needs the {attribute} "',
            '        "of a forward pass; call forward first"',
            "    )",
            f"if {code}.shape != {expected}:",
            "    raise ValueError(",
            f'        f"{self.layer}.backward expects input of the last "',
            '        f"forward\'s shape "',
            f'        f"{{{code}.shape}}; got {{{expected}}}"',
            "    )",
        ]

    # Passes.

    def forward_function(self, mode: str, model=None, label="") -> list[str]:
        names, scalars, arrays = self._scope()
        model = model or self.model
        definitions = model.modes[mode].definitions
        context = f"forward pass of model {model.name} ({mode})"
        lowerer = Lowerer(
            names, self.letters, scalars, arrays, model.example_sizes, context
        )
        lines = self._prologue(lowerer, scalars, arrays, mode, backward=False)
        for definition in definitions:
            _lower_definition(lowerer, names, definition)
        updates = []
        for update in model.modes[mode].updates:
            terms = normalize(update.expression, FreshIndices())
            code = names.temporary("updated")
            # A new array: the state must not share memory with what forward
            # keeps or returns.
            lowerer.terms(terms, update.indices, name=code, fresh=True)
            # The state keeps its own dtype, whatever the input's.
            attribute = f"self.{update.state.attribute}"
            updates.append(
                f"{attribute} = {code}.astype({attribute}.dtype, copy=False)"
            )
        output = (
            arrays.get(definitions[-1].name) or lowerer.arrays[definitions[-1].name]
        )
        tail = updates + [f"return {output}.astype(dtype, copy=False)"]
        kept = model.modes[mode].kept
        if kept:
            x = arrays[model.input_tensor.name]
            codes = ", ".join(lowerer.arrays[name] for name, _ in self._kept(mode))
            key = f"{x}, {x}.shape, {x}.dtype, {self._kept_settings()}"
            tail.insert(-1, f"self._kept_{mode} = ({key}, {codes})")
        body = _live(resolve(lowerer.lines + tail, lowerer.owned))
        self.functions[f"forward {mode} ({label})" if label else f"forward {mode}"] = (
            body[: -len(tail)]
        )
        return _live(lines + body)

    def kept_function(self, mode: str) -> list[str]:
        """``_compute_kept_<mode>``: the kept definitions, for a backward pass on
        an input the last forward pass did not see."""
        names, scalars, arrays = self._scope()
        model = self.model
        definitions = model.modes[mode].definitions
        kept = model.modes[mode].kept
        context = f"kept definitions of model {model.name} ({mode})"
        lowerer = Lowerer(
            names, self.letters, scalars, arrays, model.example_sizes, context
        )
        lines = self._prologue(lowerer, scalars, arrays, mode, backward=True)
        needed = _closure(definitions, set(kept))
        for definition in definitions:
            if definition.name in needed:
                _lower_definition(lowerer, names, definition)
        codes = ", ".join(lowerer.arrays[name] for name, _ in self._kept(mode))
        body = _live(resolve(lowerer.lines + [f"return ({codes},)"], lowerer.owned))
        return _live(lines + body)

    def _kept_settings(self) -> str:
        """The arguments and constants kept values were computed with, as a
        tuple: a kernel size changed after forward makes them stale."""
        names = [name for name, _ in self.model.arguments]
        names += [constant.name for constant in self.model.constants]
        names = list(dict.fromkeys(names))
        return "(" + "".join(f"self.{name}, " for name in names).rstrip(" ") + ")"

    def _kept(self, mode: str) -> list:
        """``(array name, index or None)`` of what the forward pass keeps: a
        kept definition's values, or for a Maximum the argmax arrays (with the
        index whose values they hold), which its gradient reads."""
        definitions = {d.name: d for d in self.model.modes[mode].definitions}
        arrays = []
        for name in self.model.modes[mode].kept:
            bases = argmax_bases(definitions[name])
            if not bases:
                arrays.append((name, None))
            arrays += [(str(base.label), index) for index, base in bases]
        return arrays

    def _read_kept(self, lowerer, names, mode: str) -> None:
        """Binds the kept definitions: the last forward pass's when it saw this
        input, computed again otherwise."""
        kept = self._kept(mode)
        x = self.input_code
        saved = names.name(("kept",), "kept")
        for name, index in kept:
            lowerer.arrays[name] = names.name(("def", name), name)
            if index is not None:
                lowerer.selections[name] = index
        codes = ", ".join(lowerer.arrays[name] for name, _ in kept)
        for line in [
            f"{saved} = self._kept_{mode}",
            f"if {saved} is None or {saved}[0] is not {x} "
            f"or {saved}[1:4] != ({x}.shape, {x}.dtype, {self._kept_settings()}):",
            "    # Not the input, or the settings, of the last forward pass:",
            "    # compute them again.",
            f"    {saved} = (None, None, None, None, *self._compute_kept_{mode}({x}))",
            f"{codes}{',' if len(kept) == 1 else ''} = {saved}[4:]",
        ]:
            lowerer.emit(line)

    def backward_function(self, mode: str, model=None, label="") -> list[str]:
        names, scalars, arrays = self._scope()
        model = model or self.model
        backward = derive_backward(model, mode)
        self.backwards[f"{mode} ({label})" if label else mode] = backward
        context = f"backward pass of model {model.name} ({mode})"
        lowerer = Lowerer(
            names, self.letters, scalars, arrays, model.example_sizes, context
        )
        lowerer.arrays["output_grad"] = "output_grad"
        lowerer.scalars[sp.Symbol("output_grad")] = "output_grad"
        lines = self._prologue(lowerer, scalars, arrays, mode, backward=True)
        # A specialized model's definitions differ from the ones forward kept.
        kept = set(model.modes[mode].kept) if model is self.model else set()
        if kept:
            self._read_kept(lowerer, names, mode)

        # Recompute the forward intermediates the adjoints read.
        definitions = model.modes[mode].definitions
        needed = set()
        for adjoint in backward.adjoints:
            for term in adjoint.terms:
                needed |= {str(r.base.label) for r in term.factor.atoms(sp.Indexed)}
        for definition in definitions:
            if any(str(base.label) in needed for _, base in argmax_bases(definition)):
                needed.add(definition.name)
        needed = _closure(definitions, needed, stop=kept)
        for definition in definitions:
            if definition.name in needed and definition.name not in kept:
                _lower_definition(lowerer, names, definition)

        results = {}
        for adjoint in backward.adjoints:
            code = names.name(("adjoint", adjoint.name), adjoint.name)
            lowerer.arrays[adjoint.name] = code
            where = f"{adjoint.name} (the gradient of {adjoint.target!r}) in {context}"
            with located(where):
                lowerer.terms(adjoint.terms, adjoint.indices, name=code)
            results[adjoint.target] = code
        returned = []
        for tensor in model.differentiable:
            if tensor.name in results:
                returned.append(results[tensor.name])
            else:
                code = names.temporary("zero")
                lowerer.emit(
                    f"{code} = np.zeros({lowerer._shape(tensor.indices)}, dtype=dtype)"
                )
                returned.append(code)
        returned[0] = f"{returned[0]}.astype(dtype, copy=False)"
        body = _live(
            resolve(
                lowerer.lines + ["return (" + ", ".join(returned) + ",)"],
                lowerer.owned,
            )
        )
        self.functions[f"backward {mode}"] = body[:-1]
        return _live(lines + body)

    # The class.

    def _mode_groups(self):
        """Modes whose definitions are the same share one method."""
        groups: dict = {}
        for mode_name, mode in self.model.modes.items():
            key = sp.srepr(
                sp.Tuple(
                    *(
                        sp.Tuple(sp.Symbol(d.name), *d.indices, d.expression)
                        for d in mode.definitions
                    ),
                    *(
                        sp.Tuple(sp.Symbol(u.state.name), u.expression)
                        for u in mode.updates
                    ),
                )
            )
            groups.setdefault(key, []).append(mode_name)
        return list(groups.values())

    def _dispatch(self, kind: str, arguments: str, groups, target: str) -> list[str]:
        """``target = self._<kind>_<mode>(arguments)`` for the current mode."""
        if len(groups) == 1:
            return [f"{target} = self._{kind}_{groups[0][0]}({arguments})"]
        train = next(group for group in groups if "train" in group)
        other = next(group for group in groups if "train" not in group)
        return [
            "if self.training:",
            f"    {target} = self._{kind}_{train[0]}({arguments})",
            "else:",
            f"    {target} = self._{kind}_{other[0]}({arguments})",
        ]

    def _input_shape(self) -> str:
        entries = []
        for index, name in zip(
            self.model.input_tensor.indices, self.model.input_layout, strict=True
        ):
            size = index.upper + 1
            if name == "...":
                entries.append('"..."')
            elif (
                size in self.model.size_bindings
                and self.model.size_bindings[size] in self.arguments
            ):
                entries.append(f"self.{self.model.size_bindings[size]}")
            else:
                entries.append(_pystr(name))
        return "(" + ", ".join(entries) + ("," if len(entries) == 1 else "") + ")"

    def _size_code(self, size) -> str:
        """Code for a size inside ``_compute_input_grad``: from ``x.shape``, an
        argument, or its formula over those."""
        input_tensor = self.model.input_tensor
        for axis, index in enumerate(input_tensor.indices):
            if index.upper + 1 == size:
                return f"x.shape[{axis}]"
        if size not in self.model.size_bindings:
            raise NotImplementedError(
                f"model {self.model.name}: the size {size} is neither an input size "
                "nor bound to an argument"
            )
        names = {symbol.name: symbol for symbol in self.model.sizes}

        def replace(match):
            word = match.group(0)
            if word in self.arguments:
                return f"self.{word}"
            if word in names:
                return f"({self._size_code(names[word])})"
            return word

        return re.sub(r"\b[A-Za-z_]\w*\b", replace, self.model.size_bindings[size])

    def _output_shape(self, mode) -> str:
        output = self.model.modes[mode].output
        entries = [self._size_code(index.upper + 1) for index in output.indices]
        return "(" + ", ".join(entries) + ("," if len(entries) == 1 else "") + ")"

    def _check_input_lines(self) -> list[str]:
        if self.flatten:
            return [
                f'array, _ = expect_array("{self.layer}", "input", input, '
                '("batch", "..."))',
                "self._input_shape = array.shape",
                "x = array.reshape(array.shape[0], -1)",
            ]
        return [
            f'x, _ = expect_array("{self.layer}", "input", input, '
            f"{self._input_shape()})"
        ]

    def constructor(self) -> list[str]:
        model = self.model
        signature = ["self"]
        for name, default in model.arguments:
            required = default is REQUIRED
            signature.append(name if required else f"{name}={default!r}")
        randomized = any(t.init == "uniform" for t in model.parameters) or any(
            t.role == "random" for t in model.tensors
        )
        if randomized:
            signature.append("rng=None")
        lines = [f"def __init__({', '.join(signature)}):", "    super().__init__()"]
        body = []
        bound_arguments = set(model.size_bindings.values())
        for name, _ in model.arguments:
            constant = next((c for c in model.constants if c.name == name), None)
            kind = model.argument_kinds.get(name)
            if kind is not None:
                self.imports.add(f"expect_{kind}")
                body.append(
                    f'self.{name} = expect_{kind}("{self.layer}", "{name}", {name})'
                )
            elif name in bound_arguments:
                self.imports.add("expect_positive_int")
                body.append(
                    f"self.{name} = expect_positive_int("
                    f'"{self.layer}", "{name}", {name})'
                )
            elif constant is not None and constant.check == (0.0, 1.0):
                self.imports.add("expect_probability")
                body.append(
                    f"self.{name} = expect_probability("
                    f'"{self.layer}", "{name}", {name})'
                )
            elif constant is not None:
                self.imports.add("expect_real")
                body.append(
                    f'self.{name} = expect_real("{self.layer}", "{name}", {name})'
                )
            else:
                body.append(f"self.{name} = {name}")
        for condition, expected in model.argument_checks:
            named = [a for a in self.arguments if re.search(rf"\b{a}\b", condition)]
            body += [
                f"if not ({self._argument_code(condition)}):",
                "    raise ValueError(",
                f'        f"{self.layer} expects {expected}; got "',
                '        f"' + ", ".join(f"{a}={{{a}!r}}" for a in named) + '"',
                "    )",
            ]
        if randomized:
            self.imports.add("make_generator")
            body.append(f'generator = make_generator(rng, "{self.layer}")')
        if any(t.init == "uniform" for t in model.parameters):
            body.append(f"scale = {self._argument_code(model.init_scale)}")
        for tensor in model.parameters:
            shape = []
            for index in tensor.indices:
                size = index.upper + 1
                if size not in model.size_bindings:
                    raise NotImplementedError(
                        f"model {model.name}: parameter {tensor.name} has a size "
                        f"{size} "
                        "that no constructor argument gives"
                    )
                shape.append(self._argument_code(model.size_bindings[size]))
            shape_code = "(" + ", ".join(shape) + ("," if len(shape) == 1 else "") + ")"
            create = []
            if tensor.init == "uniform":
                create.append(
                    f"self.{tensor.attribute} = "
                    f"generator.uniform(-scale, scale, size={shape_code})"
                )
            elif tensor.init in ("ones", "zeros"):
                create.append(
                    f"self.{tensor.attribute} = np.{tensor.init}({shape_code})"
                )
            else:
                raise NotImplementedError(
                    f"model {model.name}: parameter {tensor.name} with init "
                    f"{tensor.init!r}; expected 'uniform', 'ones' or 'zeros'"
                )
            create.append(
                f"self.{tensor.grad_attribute} = np.zeros_like(self.{tensor.attribute})"
            )
            if tensor.enabled_by:
                # A disabled parameter is None, as PyTorch's bias=False is.
                body.append(f"if self.{tensor.enabled_by}:")
                body += ["    " + line for line in create]
                body += [
                    "else:",
                    f"    self.{tensor.attribute} = None",
                    f"    self.{tensor.grad_attribute} = None",
                ]
            else:
                body += create
        for tensor in model.tensors:
            if tensor.role == "state":
                body.append(f"self.{tensor.attribute} = None")
            if tensor.role == "random":
                body += [
                    "self.generator = generator",
                    f"self.{tensor.attribute} = None",
                ]
        for mode in model.modes.values():
            if mode.kept:
                body.append(f"self._kept_{mode.name} = None")
        if model.parameters:
            body.append("self._pending_parameters_grad = None")
        return lines + _indent(body, 1)

    def _targets(self):
        return [t for t in self.model.tensors if t.role == "target"]

    def _target_lines(self) -> list[str]:
        lines = []
        for tensor in self._targets():
            classes = tensor.init == "classes"
            lines.append(
                f'{tensor.name} = expect_target("{self.layer}", {tensor.name}, '
                f"x.shape, x.dtype, classes={classes})"
            )
        return lines

    def _criterion_methods(self, groups) -> list[str]:
        targets = ", ".join(t.name for t in self._targets())
        lines = ["", f"    def _compute_output(self, input, {targets}):"]
        body = self._check_input_lines() + self._target_lines()
        body += self._dispatch("forward", f"x, {targets}", groups, "output")
        body.append("return float(output)")
        lines += _indent(body, 2)
        lines += ["", f"    def _compute_input_grad(self, input, {targets}):"]
        body = self._check_input_lines() + self._target_lines()
        body.append("# The loss is the end of the chain: its own gradient is 1.")
        body += self._dispatch("backward", f"x, {targets}, 1.0", groups, "grads")
        body.append("return grads[0]")
        return lines + _indent(body, 2)

    def _layer_methods(self, groups) -> list[str]:
        model = self.model
        stateful = any(t.role == "state" for t in model.tensors)
        prepare = ["self._prepare_state(x)"] if stateful else []
        reshape = self.flatten and not model.flatten_output
        lines = ["", "    def _compute_output(self, input):"]
        body = (
            self._check_input_lines()
            + prepare
            + self._dispatch("forward", "x", groups, "output")
        )
        body.append(
            "return output.reshape(array.shape)" if reshape else "return output"
        )
        lines += _indent(body, 2)

        lines += ["", "    def _compute_input_grad(self, input, output_grad):"]
        body = self._check_input_lines()
        if self.flatten:
            shape = "x.shape" if model.flatten_output else "array.shape"
            body += [
                f'output_grad, _ = expect_array("{self.layer}", "output_grad", '
                f"output_grad, {shape})",
                "output_grad = output_grad.reshape(x.shape)",
            ]
        else:
            body += self._input_fits()
            shape = self._output_shape(next(iter(model.modes)))
            body.append(
                f'output_grad, _ = expect_array("{self.layer}", "output_grad", '
                f"output_grad, {shape})"
            )
        body += prepare + self._dispatch("backward", "x, output_grad", groups, "grads")
        if model.parameters:
            body.append("self._pending_parameters_grad = grads[1:]")
        body.append(
            "return grads[0].reshape(array.shape)"
            if self.flatten
            else "return grads[0]"
        )
        lines += _indent(body, 2)

        if model.parameters:
            lines += ["", "    def _update_parameters_grad(self, input, output_grad):"]
            body = [
                "pending = self._pending_parameters_grad",
                "self._pending_parameters_grad = None",
                "if pending is None:",
                "    self._compute_input_grad(input, output_grad)",
                "    pending = self._pending_parameters_grad",
                "    self._pending_parameters_grad = None",
            ]
            for position, tensor in enumerate(model.parameters):
                update = f"self.{tensor.grad_attribute} += pending[{position}]"
                if tensor.enabled_by:
                    body += [
                        f"if self.{tensor.grad_attribute} is not None:",
                        "    " + update,
                    ]
                else:
                    body.append(update)
            lines += _indent(body, 2)
            optional = any(t.enabled_by for t in model.parameters)
            attributes = ", ".join(f"self.{t.attribute}" for t in model.parameters)
            grads = ", ".join(f"self.{t.grad_attribute}" for t in model.parameters)
            if optional:
                attributes = f"a for a in ({attributes},) if a is not None"
                grads = f"g for g in ({grads},) if g is not None"
            lines += [
                "",
                "    def get_parameters(self):",
                f"        return [{attributes}]",
            ]
            lines += [
                "",
                "    def get_parameters_grad(self):",
                f"        return [{grads}]",
            ]
        return lines

    def emit_class(self) -> list[str]:
        model = self.model
        groups = self._mode_groups()
        criterion = model.kind == "criterion"
        base = "Criterion" if criterion else "Module"
        lines = [f"class {model.name}({base}):", f'    """{model.summary}"""', ""]
        for constant in model.constants:
            if constant.kind == "class_attribute":
                lines.append(f"    {constant.name} = {constant.default!r}")
        if any(c.kind == "class_attribute" for c in model.constants):
            lines.append("")
        lines += _indent(self.constructor(), 1)
        if criterion:
            lines += self._criterion_methods(groups)
        else:
            lines += self._layer_methods(groups)

        shown = [name for name, _ in model.arguments]
        if shown:
            fields = ", ".join(f"{name}={{self.{name}!r}}" for name in shown)
            lines += ["", "    def _extra_repr(self):", f'        return f"{fields}"']

        lines += self.prepare_state()
        targets = "".join(f", {t.name}" for t in self._targets())
        for group in groups:
            mode = group[0]
            arguments = f"{self.input_code}{targets}"
            lines += ["", f"    def _forward_{mode}(self, {arguments}):"]
            lines += _indent(
                self._dispatch_special("forward", mode, arguments)
                + self.forward_function(mode),
                2,
            )
            for _, substitution, label in model.specializations:
                special = model.specialized(substitution)
                lines += ["", f"    def _forward_{mode}_{label}(self, {arguments}):"]
                lines += _indent(self.forward_function(mode, special, label), 2)
            if model.modes[mode].kept:
                lines += ["", f"    def _compute_kept_{mode}(self, {self.input_code}):"]
                lines += _indent(self.kept_function(mode), 2)
        arguments = f"{self.input_code}{targets}, output_grad"
        for group in groups:
            mode = group[0]
            lines += ["", f"    def _backward_{mode}(self, {arguments}):"]
            dispatch = self._dispatch_special("backward", mode, arguments)
            lines += _indent(dispatch + self.backward_function(mode), 2)
            for _, substitution, label in model.specializations:
                special = model.specialized(substitution)
                lines += ["", f"    def _backward_{mode}_{label}(self, {arguments}):"]
                lines += _indent(self.backward_function(mode, special, label), 2)
        return lines

    def _dispatch_special(self, kind: str, mode: str, arguments: str) -> list[str]:
        """Lines that hand a pass to its specialised version when one applies."""
        lines = []
        for condition, _, label in self.model.specializations:
            lines += [
                f"if {self._argument_code(condition)}:",
                f"    return self._{kind}_{mode}_{label}({arguments})",
            ]
        return lines


def _closure(definitions, wanted, stop=()) -> set:
    """``wanted`` and every definition they read, directly or not; a definition
    in ``stop`` is taken as given, and what it reads is not added for it."""
    needed = set(wanted)
    for definition in reversed(definitions):
        if definition.name in needed and definition.name not in stop:
            needed |= {
                str(r.base.label) for r in definition.expression.atoms(sp.Indexed)
            }
    return needed


def _lower_definition(lowerer: Lowerer, names: Names, definition) -> None:
    """Emits one forward definition; a Maximum also names its argmax arrays."""
    with located(f"definition {definition.name!r} of {lowerer.context}"):
        _lower_definition_here(lowerer, names, definition)


def _lower_definition_here(lowerer: Lowerer, names: Names, definition) -> None:
    code = names.name(("def", definition.name), definition.name)
    lowerer.arrays[definition.name] = code
    if isinstance(definition.expression, Maximum):
        positions = []
        for index, base in argmax_bases(definition):
            label = str(base.label)
            positions.append(names.name(("def", label), label))
            lowerer.arrays[label] = positions[-1]
            lowerer.selections[label] = index
        lowerer.maximum(definition.expression, definition.indices, code, positions)
        return
    terms = normalize(definition.expression, FreshIndices())
    lowerer.terms(terms, definition.indices, name=code)
    if len(terms) == 1 and not terms[0].summed:
        # Later statements that recompute this expression read it instead.
        lowerer.remember(definition.expression, definition.indices, code)


def _docstring(model: Model, emitter: _ModuleEmitter, module_name: str) -> list[str]:
    lines = [f'"""{model.name}: {model.summary}', ""]
    lines.append(
        "Forward definitions, by mode (reads outside a tensor's range are zero):"
    )
    for mode_name, mode in model.modes.items():
        lines.append("")
        lines.append(f"    {mode_name}:")
        for definition in mode.definitions:
            indices = ", ".join(map(str, definition.indices))
            lines.append(
                f"        {definition.name}[{indices}] = "
                f"{sp.sstr(definition.expression)}"
            )
        for update in mode.updates:
            indices = ", ".join(map(str, update.indices))
            lines.append(
                f"        {update.state.name}[{indices}] <- "
                f"{sp.sstr(update.expression)}"
            )
    lines += ["", "Derived backward passes (vector-Jacobian products):"]
    for mode_name, backward in emitter.backwards.items():
        lines.append("")
        lines.append(f"    {mode_name}:")
        for adjoint in backward.adjoints:
            indices = ", ".join(map(str, adjoint.indices))
            lines.append(
                f"        {adjoint.name}[{indices}] = {sp.sstr(adjoint.expression)}"
            )
    table = ", ".join(
        f"{index} -> {letter}" for index, letter in emitter.letters.table()
    )
    lines += ["", f"Einsum letters: {table}.", '"""']
    return lines


def emit_module(model: Model, module_name: str, command: str | None = None) -> Emitted:
    """The text of the generated module for ``model``.

    ``command`` is the command that rebuilds it, for the header; by default the
    catalog's ``python -m codegen <module_name>``.
    """
    for mode in model.modes.values():
        check_model(model, mode)
    emitter = _ModuleEmitter(model, module_name)
    class_lines = emitter.emit_class()
    body = "\n".join(class_lines)
    validation = ["expect_array"]
    if "expect_target(" in body:
        validation.append("expect_target")
    validation += sorted(n for n in emitter.imports if n.startswith("expect_"))
    if "reversed_slice(" in body:
        validation.append("reversed_slice")
    random = [
        name for name in ("draw_keep_mask", "make_generator") if name in emitter.imports
    ]
    header = [
        f"# Generated by symbolic-backprop from {model.source} (model {model.name}).",
        f"# Do not edit: rebuild with `{command or f'{COMMAND} {module_name}'}`.",
    ]
    imports = ["import numpy as np"]
    if "sliding_window_view(" in body:
        imports.append("from numpy.lib.stride_tricks import sliding_window_view")
    imports.append("")
    base = "Criterion" if model.kind == "criterion" else "Module"
    imports.append(f"from layers.module import {base}")
    if random:
        imports.append(f"from layers.random import {', '.join(sorted(random))}")
    if "select_or_zero(" in body:
        imports.append("from layers.select import select_or_zero")
    imports.append(f"from layers.validation import {', '.join(sorted(validation))}")
    text = "\n".join(
        header
        + _docstring(model, emitter, module_name)
        + [""]
        + imports
        + ["", ""]
        + class_lines
    )
    return Emitted(
        module_name,
        text.rstrip() + "\n",
        emitter.letters.table(),
        emitter.backwards,
        emitter.functions,
    )

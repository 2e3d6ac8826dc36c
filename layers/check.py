"""One-call check of a handwritten layer against the matching generated one.

``compare_layers(candidate, oracle, input_shape)`` runs two modules that follow
the ``layers.module.Module`` contract side by side and reports how far the
candidate (typically a course exercise) is from the oracle (typically the layer
of ``layers.generated`` with the same constructor arguments). In each mode:

1. Both modules switch to the mode and get a fresh standard-normal float64
   input of ``input_shape``. A fresh draw per mode matters: evaluation fed the
   batch that training just took its statistics from cannot tell moving
   statistics from batch ones.
2. Both run forward; the outputs are compared.
3. Both parameter gradients are zeroed and then given the same random values,
   so that a backward that overwrites them instead of adding to them fails.
4. Both run backward with the same standard-normal ``output_grad``, never all
   ones: with all ones the training input gradient of a batch normalization is
   zero, and a layer returning zeros would pass. The input gradients are
   compared, and so is what backward added to each parameter gradient.

Every comparison reports the largest absolute error, the largest relative
error (normwise: the absolute one divided by the largest entry of the oracle)
and passes when each entry satisfies ``|candidate - oracle| <= atol + rtol *
|oracle|``, as in ``numpy.allclose``.

Parameters are made equal by copying the oracle's into the candidate's own
arrays, in place and in ``get_parameters()`` order. State that is not a
parameter (the moving statistics of a batch normalization) is not copied: each
module keeps its own, and the modes run in the order given, so with the default
order the training pass updates both from the same batch before evaluation
reads it.

A forward that draws random numbers (Dropout in training) cannot be compared
entry by entry: the two modules draw different masks. The checker finds out by
running a copy of the oracle several times on the same input. If the forward is
random and both modules keep their draw in a ``mask`` attribute, the outputs are
reported as skipped, with the reason, and before backward the candidate's mask
is replaced by the oracle's keep pattern in the candidate's own encoding (bool,
0/1 or scaled), so that the gradients of the same forward are compared. Without
a shared ``mask``, nothing of that mode is compared and the report says so.

``check_gradients``, the central-difference checker of ``layers.gradcheck``
that needs no oracle, is re-exported here.
"""

import copy
import math
import numbers
from dataclasses import dataclass

import numpy as np

from layers.gradcheck import check_gradients, parameter_attributes
from layers.random import make_generator

__all__ = [
    "ComparisonReport",
    "QuantityComparison",
    "check_gradients",
    "compare_layers",
]

_CALLER = "compare_layers"
_METHODS = (
    "forward",
    "backward",
    "get_parameters",
    "get_parameters_grad",
    "zero_grad",
    "train",
    "evaluate",
)
_MODES = ("train", "evaluate")
# Extra forwards of a copy of the oracle that must all agree for its forward to
# count as deterministic; a Dropout over a handful of entries can draw the same
# mask twice by chance, three times far more rarely.
_PROBES = 3


@dataclass(frozen=True)
class QuantityComparison:
    """How one quantity of the candidate compares with the oracle's in one mode.

    Attributes:
        mode: ``train`` or ``evaluate``.
        quantity: ``output``, ``input_grad`` or ``grad_<parameter>``.
        max_abs_error: the largest ``|candidate - oracle|``; inf when the shapes
            differ, None when skipped.
        max_rel_error: ``max_abs_error`` divided by the largest ``|oracle|``;
            None when skipped.
        status: ``ok``, ``FAILED`` or ``skipped``.
        note: why it failed on shape or was skipped; empty otherwise.
    """

    mode: str
    quantity: str
    max_abs_error: float | None
    max_rel_error: float | None
    status: str
    note: str = ""

    @property
    def passed(self):
        """True when compared and within tolerance."""
        return self.status == "ok"

    @property
    def failed(self):
        """True when compared and out of tolerance."""
        return self.status == "FAILED"


@dataclass(frozen=True)
class ComparisonReport:
    """The outcome of ``compare_layers``: one row per mode and quantity.

    Attributes:
        candidate: the class of the checked module, with its module path.
        oracle: the class of the module it was checked against.
        input_shape: the shape of the inputs both were fed.
        rtol: the relative tolerance used.
        atol: the absolute tolerance used.
        comparisons: ``QuantityComparison`` rows, mode by mode, each mode in
            the order output, input gradient, parameter gradients.
    """

    candidate: str
    oracle: str
    input_shape: tuple
    rtol: float
    atol: float
    comparisons: tuple

    @property
    def passed(self):
        """True when something was compared and nothing failed."""
        compared = [c for c in self.comparisons if c.status != "skipped"]
        return bool(compared) and all(c.passed for c in compared)

    @property
    def failures(self):
        """The rows that failed."""
        return tuple(c for c in self.comparisons if c.failed)

    def __str__(self):
        if self.passed:
            verdict = "passed"
        elif self.failures:
            verdict = "FAILED"
        else:
            verdict = "FAILED: nothing could be compared"
        lines = [
            f"compare_layers {verdict} (rtol={self.rtol:g}, atol={self.atol:g})",
            f"  candidate  {self.candidate}",
            f"  oracle     {self.oracle}",
            f"  input      {self.input_shape}",
            "",
        ]
        rows = [("mode", "quantity", "max abs error", "max rel error", "result")]
        rows += [_row(c) for c in self.comparisons]
        widths = [max(map(len, column)) for column in zip(*rows, strict=True)]
        for row in rows:
            cells = [
                cell.rjust(width) if "error" in rows[0][k] else cell.ljust(width)
                for k, (cell, width) in enumerate(zip(row, widths, strict=True))
            ]
            lines.append(("  " + "  ".join(cells)).rstrip())

        # One line per reason, naming every row it applies to.
        notes = {}
        for c in self.comparisons:
            if c.note:
                notes.setdefault((c.mode, c.note), []).append(c.quantity)
        if notes:
            lines.append("")
        for (mode, note), quantities in notes.items():
            lines.append(f"  {mode} {', '.join(quantities)}: {note}")
        return "\n".join(lines)


def _row(comparison):
    errors = (comparison.max_abs_error, comparison.max_rel_error)
    errors = ["-" if error is None else f"{error:.3e}" for error in errors]
    return (comparison.mode, comparison.quantity, *errors, comparison.status)


def _class_name(module):
    # A class defined in a script or a notebook is known by its name alone.
    cls = type(module)
    if cls.__module__ in ("__main__", "builtins"):
        return cls.__qualname__
    return f"{cls.__module__}.{cls.__qualname__}"


def _check_module(argument, module):
    missing = [name for name in _METHODS if not callable(getattr(module, name, None))]
    if missing:
        raise TypeError(
            f"{_CALLER} expects {argument} as a Module with "
            f"{', '.join(_METHODS)}; got {type(module).__name__} without "
            f"{', '.join(missing)}"
        )


def _check_input_shape(input_shape):
    try:
        shape = tuple(input_shape)
    except TypeError:
        raise TypeError(
            f"{_CALLER} expects input_shape as a tuple of positive ints; "
            f"got {type(input_shape).__name__} {input_shape!r}"
        ) from None
    valid = all(
        isinstance(size, numbers.Integral) and not isinstance(size, bool) and size > 0
        for size in shape
    )
    if not shape or not valid:
        raise ValueError(
            f"{_CALLER} expects input_shape as a non-empty tuple of positive ints; "
            f"got {input_shape!r}"
        )
    return tuple(int(size) for size in shape)


def _check_tolerance(argument, value):
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or value < 0
    ):
        raise ValueError(
            f"{_CALLER} expects {argument} as a finite non-negative number; "
            f"got {value!r}"
        )
    return float(value)


def _check_modes(modes):
    if isinstance(modes, str):
        raise TypeError(
            f"{_CALLER} expects modes as a tuple of 'train' and 'evaluate'; got the "
            f"str {modes!r} (write ({modes!r},))"
        )
    modes = tuple(modes)
    if not modes or any(mode not in _MODES for mode in modes):
        raise ValueError(
            f"{_CALLER} expects modes as a non-empty tuple of 'train' and "
            f"'evaluate'; got {modes!r}"
        )
    if len(set(modes)) != len(modes):
        raise ValueError(f"{_CALLER} expects each of modes once; got {modes!r}")
    return modes


def _copy_parameters(candidate, oracle):
    """Copies the oracle's parameters into the candidate's arrays, in place.

    Returns the oracle's parameter names, in ``get_parameters()`` order.
    """
    wanted = oracle.get_parameters()
    names = parameter_attributes(oracle, wanted)
    own = candidate.get_parameters()
    if len(own) != len(wanted):
        raise ValueError(
            f"{_CALLER} expects candidate with as many parameters as oracle, "
            f"{len(wanted)} ({', '.join(names) or 'none'}); got {len(own)}"
        )
    grads = candidate.get_parameters_grad()
    if len(grads) != len(own):
        raise ValueError(
            f"{_CALLER} expects candidate.get_parameters_grad() to return one "
            f"gradient per parameter, {len(own)}; got {len(grads)}"
        )
    for index, (name, mine, theirs) in enumerate(zip(names, own, wanted, strict=True)):
        if np.shape(mine) != np.shape(theirs):
            raise ValueError(
                f"{_CALLER} expects parameter {index} ({name}) of candidate shaped "
                f"like the oracle's, {np.shape(theirs)}; got {np.shape(mine)}"
            )
        if not isinstance(mine, np.ndarray):
            raise TypeError(
                f"{_CALLER} expects parameter {index} ({name}) of candidate as a "
                f"NumPy array it can overwrite; got {type(mine).__name__}"
            )
        mine[...] = theirs

    # A get_parameters() that returns copies would leave the layer unchanged.
    for index, (name, mine, theirs) in enumerate(
        zip(names, candidate.get_parameters(), wanted, strict=True)
    ):
        if not np.array_equal(mine, theirs):
            raise ValueError(
                f"{_CALLER} could not set parameter {index} ({name}) of candidate: "
                "its get_parameters() must return the arrays the layer uses, "
                "not copies"
            )
    return names


def _forward_is_random(oracle, input):
    # A copy, so that the oracle's state (moving statistics, generator) is
    # left exactly as one forward will find it.
    probe = copy.deepcopy(oracle)
    first = np.asarray(probe.forward(input.copy()))
    again = (np.asarray(probe.forward(input.copy())) for _ in range(_PROBES))
    return not all(np.array_equal(first, other, equal_nan=True) for other in again)


def _share_mask(candidate, oracle):
    """Writes the oracle's keep pattern into the candidate's ``mask``.

    Returns an empty string when done, otherwise why it could not be done.
    """
    oracle_mask = getattr(oracle, "mask", None)
    candidate_mask = getattr(candidate, "mask", None)
    if oracle_mask is None or candidate_mask is None:
        return "the layers keep no `mask` attribute to share"
    keep = np.asarray(oracle_mask) != 0
    candidate_mask = np.asarray(candidate_mask)
    if candidate_mask.shape != keep.shape:
        return (
            f"the candidate's mask has shape {candidate_mask.shape}, the oracle's "
            f"{keep.shape}"
        )
    # Keep the candidate's encoding of a kept entry: True, 1 or 1 / (1 - p).
    kept_values = np.unique(candidate_mask[candidate_mask != 0])
    kept = kept_values[0] if kept_values.size == 1 else 1
    candidate.mask = np.where(keep, kept, 0).astype(candidate_mask.dtype)
    return ""


def _compare(mode, quantity, actual, expected, rtol, atol):
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        note = f"shape {actual.shape} instead of {expected.shape}"
        return QuantityComparison(mode, quantity, math.inf, math.inf, "FAILED", note)
    error = np.abs(actual - expected)
    max_abs_error = float(error.max())
    scale = float(np.abs(expected).max())
    if scale > 0:
        max_rel_error = max_abs_error / scale
    else:
        max_rel_error = 0.0 if max_abs_error == 0 else math.inf
    passed = bool(np.all(error <= atol + rtol * np.abs(expected)))
    status = "ok" if passed else "FAILED"
    return QuantityComparison(mode, quantity, max_abs_error, max_rel_error, status)


def _skipped(mode, quantities, note):
    return [
        QuantityComparison(mode, q, None, None, "skipped", note) for q in quantities
    ]


def _give_gradients_a_history(candidate, oracle, generator):
    # Zeroed, then the same random values in both: what backward adds is then
    # the gradient minus this prior, and a backward that overwrites loses it.
    candidate.zero_grad()
    oracle.zero_grad()
    priors = []
    pairs = zip(
        candidate.get_parameters_grad(), oracle.get_parameters_grad(), strict=True
    )
    for mine, theirs in pairs:
        prior = generator.standard_normal(np.shape(theirs))
        theirs += prior
        if np.shape(mine) == prior.shape:
            mine += prior
        priors.append(prior)
    return priors


def _added(grad, prior):
    grad = np.asarray(grad)
    return grad - prior if grad.shape == prior.shape else grad


def _compare_mode(candidate, oracle, mode, input_shape, names, generator, tolerances):
    for module in (candidate, oracle):
        getattr(module, mode)()
    gradients = ["input_grad", *(f"grad_{name}" for name in names)]
    input = generator.standard_normal(input_shape)
    random_forward = _forward_is_random(oracle, input)

    # Each module gets its own copies, so that one writing into its arguments
    # cannot change what the other sees.
    output = np.asarray(oracle.forward(input.copy()))
    candidate_output = np.asarray(candidate.forward(input.copy()))
    output_grad = generator.standard_normal(output.shape)

    if random_forward:
        why_not = _share_mask(candidate, oracle)
        if why_not:
            note = f"the forward is random in this mode and {why_not}"
            return _skipped(mode, ["output", *gradients], note)
        results = _skipped(
            mode,
            ["output"],
            "the forward is random in this mode; the gradients were compared "
            "after the candidate's mask was set to the oracle's",
        )
    else:
        results = [_compare(mode, "output", candidate_output, output, *tolerances)]
        if candidate_output.shape != output.shape:
            note = "the candidate's output has the wrong shape"
            return results + _skipped(mode, gradients, note)

    priors = _give_gradients_a_history(candidate, oracle, generator)
    input_grad = oracle.backward(input.copy(), output_grad.copy())
    candidate_input_grad = candidate.backward(input.copy(), output_grad.copy())
    results.append(
        _compare(mode, "input_grad", candidate_input_grad, input_grad, *tolerances)
    )
    grads = zip(
        gradients[1:],
        priors,
        candidate.get_parameters_grad(),
        oracle.get_parameters_grad(),
        strict=True,
    )
    for quantity, prior, mine, theirs in grads:
        mine, theirs = _added(mine, prior), _added(theirs, prior)
        results.append(_compare(mode, quantity, mine, theirs, *tolerances))
    return results


def compare_layers(
    candidate,
    oracle,
    input_shape,
    *,
    rng=None,
    rtol=1e-6,
    atol=1e-8,
    modes=("train", "evaluate"),
):
    """Checks a layer against a trusted one (see the module docstring for how).

    Args:
        candidate: the module under test, following ``layers.module.Module``.
            Its parameters are overwritten with the oracle's.
        oracle: the trusted module with the same constructor arguments, for
            example from ``layers.generated``.
        input_shape: the shape of the random inputs, e.g. ``(8, 3, 5, 5)``.
        rng: None, an int seed or a ``numpy.random.Generator`` for the inputs,
            the upstream gradients and the gradient prior; a seed reproduces a
            report.
        rtol: the relative tolerance of each entry.
        atol: the absolute tolerance of each entry.
        modes: the modes to check, in order: ``train``, ``evaluate`` or both.

    Returns:
        A ``ComparisonReport``; ``print`` it for the table, read ``passed``
        for the verdict and ``failures`` for what went wrong. Both modules are
        left in the last mode, with equal parameters and zeroed gradients.

    Raises:
        TypeError: ``candidate`` or ``oracle`` lacks a Module method, or an
            argument has the wrong type.
        ValueError: an argument is out of range, ``candidate`` is ``oracle``,
            or the parameters differ in number or shape.
    """
    _check_module("candidate", candidate)
    _check_module("oracle", oracle)
    if candidate is oracle:
        raise ValueError(
            f"{_CALLER} expects candidate and oracle as two modules; got the same "
            "object twice, which would pass whatever it computes"
        )
    input_shape = _check_input_shape(input_shape)
    tolerances = (_check_tolerance("rtol", rtol), _check_tolerance("atol", atol))
    modes = _check_modes(modes)
    generator = make_generator(rng)

    names = _copy_parameters(candidate, oracle)
    comparisons = []
    for mode in modes:
        comparisons += _compare_mode(
            candidate, oracle, mode, input_shape, names, generator, tolerances
        )
    candidate.zero_grad()
    oracle.zero_grad()
    return ComparisonReport(
        _class_name(candidate),
        _class_name(oracle),
        input_shape,
        *tolerances,
        tuple(comparisons),
    )

"""Checks of user input shared by the reference and the generated layers.

Every failure is a ValueError or TypeError whose message names the layer, the
argument, what was expected and what came.
"""

import math
import numbers

import numpy as np


def _describe(shape):
    trailing = "," if len(shape) == 1 else ""
    return "(" + ", ".join(str(size) for size in shape) + trailing + ")"


def _axes(count):
    return "1 axis" if count == 1 else f"{count} axes"


def expect_array(layer, argument, value, shape, bound=None):
    """Returns ``value`` as a float ndarray whose shape matches ``shape``.

    Args:
        layer: the layer's name, for messages.
        argument: the argument's name, for messages.
        value: what the user passed.
        shape: one entry per axis: an int the axis must equal, or a size name
            (a str) that binds to whatever the axis holds. A name used twice, or
            already present in ``bound``, must hold the same value each time.
        bound: sizes already known, by name; updated in place.

    Returns:
        ``(array, bound)``: the array and the sizes bound by name.

    Raises:
        TypeError: ``value`` is not a float32 or float64 array (integers and
            float16 are refused, not converted).
        ValueError: the number of axes or a size does not match, or an axis is
            empty.
    """
    bound = {} if bound is None else bound
    try:
        array = np.asarray(value)
    except (ValueError, TypeError) as error:
        raise ValueError(
            f"{layer} expects {argument} as a rectangular array of floats; "
            f"got a {type(value).__name__} NumPy cannot make one array of ({error})"
        ) from None
    if array.dtype not in (np.float32, np.float64):
        # Integers are refused rather than converted: a silent cast would hide
        # a wrong input; float16 loses the sums and powers these layers take.
        raise TypeError(
            f"{layer} expects {argument} as a float32 or float64 array; "
            f"got dtype {array.dtype}"
        )
    expected = _describe(shape)
    if shape and shape[-1] == "...":
        # "..." stands for any number of trailing axes, none included.
        if array.ndim < len(shape) - 1:
            raise ValueError(
                f"{layer} expects {argument} of shape {expected}; "
                f"got {_describe(array.shape)} ({_axes(array.ndim)})"
            )
        rest = range(len(shape) - 1, array.ndim)
        shape = tuple(shape[:-1]) + tuple(f"axis {k}" for k in rest)
    if array.ndim != len(shape):
        raise ValueError(
            f"{layer} expects {argument} of shape {expected}; "
            f"got {_describe(array.shape)} "
            f"({_axes(array.ndim)} instead of {len(shape)})"
        )
    for axis, (want, got) in enumerate(zip(shape, array.shape, strict=True)):
        if got == 0:
            raise ValueError(
                f"{layer} expects {argument} of shape {expected} with no empty "
                f"axis; got {_describe(array.shape)} (axis {axis} is empty)"
            )
        if isinstance(want, str):
            if bound.setdefault(want, got) != got:
                raise ValueError(
                    f"{layer} expects {argument} of shape {expected} with "
                    f"{want} = {bound[want]}; got {_describe(array.shape)}"
                )
        elif want != got:
            raise ValueError(
                f"{layer} expects {argument} of shape {expected}; "
                f"got {_describe(array.shape)}"
            )
    return array, bound


def expect_output_grad(layer, output_grad, output_shape):
    """Returns ``output_grad`` as a float ndarray shaped like the output."""
    array, _ = expect_array(layer, "output_grad", output_grad, tuple(output_shape))
    return array


def expect_positive_int(layer, argument, value):
    """Returns ``value`` as an int, or raises a ValueError naming the argument."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 1:
        raise ValueError(f"{layer} expects {argument} as a positive int; got {value!r}")
    return int(value)


def expect_probability(layer, argument, value):
    """Returns ``value`` as a float in [0, 1], or raises a ValueError naming it."""
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
        or not 0 <= value <= 1
    ):
        raise ValueError(
            f"{layer} expects {argument} as a real number in [0, 1]; got {value!r}"
        )
    return float(value)


def reversed_slice(start, count):
    """``slice`` of ``count`` entries from ``start`` down to ``start - count + 1``.

    A plain ``start:start - count:-1`` goes wrong when ``start - count`` is -1,
    which Python reads as the last entry.
    """
    stop = start - count
    return slice(start, stop if stop >= 0 else None, -1)


def expect_target(layer, target, input_shape, dtype, classes=False):
    """Returns a criterion's target as a float array of the input's shape.

    Args:
        layer: the criterion's name, for messages.
        target: what the user passed.
        input_shape: the shape of the criterion's input, (batch, n) for classes.
        dtype: the float dtype to return.
        classes: also accept integer class indices of shape (batch,), which are
            turned into one-hot rows.

    Raises:
        ValueError: the shape does not match, or a class index is out of range.
        TypeError: the target is neither floating point nor, with ``classes``,
            integer class indices.
    """
    array = np.asarray(target)
    if classes and array.ndim == 1 and np.issubdtype(array.dtype, np.integer):
        batch, count = input_shape
        if array.shape != (batch,):
            raise ValueError(
                f"{layer} expects target class indices of shape ({batch},); "
                f"got {_describe(array.shape)}"
            )
        if array.size and (array.min() < 0 or array.max() >= count):
            bad = array[(array < 0) | (array >= count)][0]
            raise ValueError(
                f"{layer} expects target class indices in [0, {count}); got {bad}"
            )
        one_hot = np.zeros(input_shape, dtype=dtype)
        one_hot[np.arange(batch), array] = 1
        return one_hot
    expected = tuple(input_shape)
    if classes:
        expected_text = f"{_describe(expected)} one-hot, or integer class indices"
        if not np.issubdtype(array.dtype, np.floating):
            raise TypeError(
                f"{layer} expects target as {expected_text} ({expected[0]},); "
                f"got dtype {array.dtype} and shape {_describe(array.shape)}"
            )
    array, _ = expect_array(layer, "target", array, expected)
    return array.astype(dtype, copy=False)


def expect_optional_positive_int(layer, argument, value):
    """Returns None, or ``value`` as a positive int; else a ValueError naming it."""
    if value is None:
        return None
    return expect_positive_int(layer, argument, value)


def expect_padding(layer, argument, value):
    """Returns "same" or a non-negative int; else a ValueError naming it."""
    if isinstance(value, str) and value == "same":
        return value
    if not isinstance(value, numbers.Integral) or isinstance(value, bool) or value < 0:
        raise ValueError(
            f'{layer} expects {argument} as a non-negative int or "same"; got {value!r}'
        )
    return int(value)


def expect_bool(layer, argument, value):
    """Returns ``value`` if it is a bool; else a TypeError naming it."""
    if not isinstance(value, bool):
        raise TypeError(f"{layer} expects {argument} as True or False; got {value!r}")
    return value


def expect_real(layer, argument, value):
    """Returns ``value`` as a finite float; else a ValueError naming it."""
    if (
        not isinstance(value, numbers.Real)
        or isinstance(value, bool)
        or not math.isfinite(value)
    ):
        raise ValueError(f"{layer} expects {argument} as a real number; got {value!r}")
    return float(value)

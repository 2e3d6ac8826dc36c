"""Which arrays a layer's own passes hold in a wider dtype than its input.

A float64 constant, parameter or ``np.where`` of Python numbers makes NumPy
promote an intermediate to float64, and an ``astype`` at the end hides it: the
output is float32, the work and the memory traffic were float64. Tracing the
passes line by line (``sys.settrace``) shows every array they leave in a local
variable.
"""

import sys

import numpy as np


def wide_intermediates(layer, input, output_grad=None, target=None):
    """Local arrays of ``layer``'s passes wider than ``input``'s dtype.

    Runs one forward and, when ``output_grad`` (or, for a criterion, ``target``)
    is given, one backward, and looks at the local variables of every function
    defined in the layer's own module after each of its lines. Arrays smaller
    than the input (parameters, per-feature statistics) and the arrays passed
    in are not reported.

    Args:
        layer: a ``layers.module.Module`` (or a criterion).
        input: a floating-point array.
        output_grad: the upstream gradient for a layer's backward.
        target: the target of a criterion; its backward needs no output_grad.

    Returns:
        ``{"function: variable": (dtype name, shape)}``, empty when every
        input-sized intermediate keeps the input's dtype.
    """
    input = np.asarray(input)
    source = sys.modules[type(layer).__module__].__file__
    # What the caller passes is theirs, not an intermediate (a float64 target).
    given = {id(a) for a in (input, output_grad, target) if a is not None}
    seen = {}

    def lines(frame, event, arg):
        for name, value in frame.f_locals.items():
            if (
                isinstance(value, np.ndarray)
                and id(value) not in given
                and value.dtype.kind == "f"
                and value.dtype.itemsize > input.dtype.itemsize
                and value.size >= input.size
            ):
                key = f"{frame.f_code.co_name}: {name}"
                seen[key] = (value.dtype.name, value.shape)
        return lines

    def calls(frame, event, arg):
        return lines if frame.f_code.co_filename == source else None

    previous = sys.gettrace()
    sys.settrace(calls)
    try:
        if target is None:
            layer.forward(input)
            if output_grad is not None:
                layer.backward(input, output_grad)
        else:
            layer.forward(input, target)
            layer.backward(input, target)
    finally:
        sys.settrace(previous)
    return seen

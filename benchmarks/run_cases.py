"""Runs one case in one dtype: generated, reference and PyTorch, side by side.

Every implementation gets the same input, the same ``output_grad`` and, for
PyTorch, the generated layer's parameters cast to the run's dtype. A NumPy
layer's backward is ``layer.backward(input, output_grad)`` after one forward on
the same input: the input gradient and every parameter gradient. PyTorch's
backward is ``torch.autograd.grad`` of the output with respect to the input and
every parameter, on a graph recorded once and kept with ``retain_graph=True``,
so that no forward work is counted in it. PyTorch's forward is timed with the
graph being recorded, as in training.
"""

import numpy as np
from measure import interleaved_medians, peak_bytes

from layers.dtypes import wide_intermediates

TORCH_BACKWARD_METHOD = (
    "torch.autograd.grad of the output w.r.t. the input and every parameter, "
    "on a graph recorded once (retain_graph=True); forward timed while "
    "recording the graph"
)

# A reference layer whose backward would need more memory than this is skipped.
REFERENCE_MEMORY_LIMIT = 4 * 2**30


def _inputs(case, sizes, dtype):
    """The input and, for a criterion, the target, both in ``dtype``."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(case.input_shape(sizes)).astype(dtype)
    if case.target == "values":
        return x, rng.standard_normal(x.shape).astype(dtype)
    if case.target == "classes":
        # Log-probabilities and one-hot rows, as a classifier's loss sees them.
        x = x - np.log(np.exp(x).sum(axis=1, keepdims=True))
        target = np.zeros(x.shape, dtype=dtype)
        target[np.arange(x.shape[0]), rng.integers(0, x.shape[1], x.shape[0])] = 1
        return x.astype(dtype), target
    return x, None


def _numpy_calls(layer, x, target, output_grad):
    """forward() and backward() closures of a NumPy layer or criterion."""
    if target is None:
        return (lambda: layer.forward(x)), (lambda: layer.backward(x, output_grad))
    return (lambda: layer.forward(x, target)), (lambda: layer.backward(x, target))


def _torch_calls(torch, case, layer, x, target, output_grad):
    """forward() and backward() closures of PyTorch, and its output and grads."""
    function, parameters = case.torch_op(torch, layer)
    x_t = torch.from_numpy(x.copy()).requires_grad_()
    params_t = [
        torch.from_numpy(np.array(p, dtype=x.dtype)).requires_grad_()
        for p in parameters
    ]
    if target is None:
        arguments = [x_t, *params_t]
        grad_outputs = torch.from_numpy(output_grad)
    else:
        arguments = [x_t, torch.from_numpy(target)]
        grad_outputs = None

    def forward():
        return function(*arguments)

    output = forward()
    wrt = [x_t, *params_t]

    def backward():
        return torch.autograd.grad(
            output, wrt, grad_outputs=grad_outputs, retain_graph=True
        )

    input_grad = backward()[0]
    return forward, backward, output.detach().numpy(), input_grad.numpy()


def _agrees(actual, expected, dtype):
    """Whether two results agree to the precision of ``dtype``."""
    actual, expected = np.asarray(actual), np.asarray(expected)
    if actual.shape != expected.shape:
        return False
    scale = max(1.0, float(np.abs(expected).max(initial=0.0)))
    rtol, atol = (1e-3, 1e-3) if dtype == np.float32 else (1e-7, 1e-9)
    return bool(np.allclose(actual, expected, rtol=rtol, atol=atol * scale))


def _dtypes(output, input_grad, layer):
    return {
        "output": np.asarray(output).dtype.name if np.ndim(output) else "float",
        "input_grad": input_grad.dtype.name,
        "parameter_grads": [g.dtype.name for g in layer.get_parameters_grad()]
        if hasattr(layer, "get_parameters_grad")
        else [],
    }


def run_case(case, dtype, *, generated, reference, torch, tiny, repeats):
    """Times forward and backward of one case in one dtype; returns a dict.

    Args:
        case: a ``cases.Case``.
        dtype: ``np.float32`` or ``np.float64``.
        generated, reference: the layer packages; ``reference`` may lack the
            layer.
        torch: the torch module, or None when PyTorch is not installed.
        tiny: the ``--tiny`` sizes, one call each.
        repeats: samples for the generated layer and PyTorch; the reference
            gets a third as many, at least 3.
    """
    dtype = np.dtype(dtype)
    sizes = case.sizes_for(tiny)
    x, target = _inputs(case, sizes, dtype)
    result = {
        "case": case.key,
        "layer": case.layer,
        "label": case.label(tiny),
        "sizes": sizes,
        "dtype": dtype.name,
        "input_shape": list(x.shape),
        "input_bytes": x.nbytes,
    }

    layer = case.build(generated, sizes)
    output = layer.forward(x) if target is None else layer.forward(x, target)
    output_grad = None
    if target is None:
        rng = np.random.default_rng(1)
        output_grad = rng.standard_normal(np.shape(output)).astype(dtype)
    forwards, backwards = {}, {}
    forwards["generated"], backwards["generated"] = _numpy_calls(
        layer, x, target, output_grad
    )
    input_grad = backwards["generated"]()
    result["dtypes"] = _dtypes(output, input_grad, layer)
    if dtype == np.float32:
        wide = wide_intermediates(
            case.build(generated, sizes), x, output_grad=output_grad, target=target
        )
        result["dtypes"]["wide_inside"] = sorted(wide)
    samples = {"generated": repeats}

    if torch is None:
        result["torch"] = {"skipped": "PyTorch is not installed"}
    else:
        forward, backward, torch_output, torch_grad = _torch_calls(
            torch, case, layer, x, target, output_grad
        )
        forwards["torch"], backwards["torch"] = forward, backward
        samples["torch"] = repeats
        result["torch"] = {}
        if case.random:
            result["torch"]["agrees"] = None  # each draws its own numbers
        else:
            result["torch"]["agrees"] = _agrees(
                output, torch_output, dtype
            ) and _agrees(input_grad, torch_grad, dtype)

    reference_layer = None
    if case.layer not in reference.__all__:
        result["reference"] = None
    elif case.reference_bytes and (
        case.reference_bytes(sizes, dtype.itemsize) > REFERENCE_MEMORY_LIMIT
    ):
        needed = case.reference_bytes(sizes, dtype.itemsize) / 2**30
        result["reference"] = {"skipped": f"its backward would need ~{needed:.0f} GiB"}
    else:
        reference_layer = case.build(reference, sizes)
        forwards["reference"], backwards["reference"] = _numpy_calls(
            reference_layer, x, target, output_grad
        )
        samples["reference"] = max(3, repeats // 3)
        result["reference"] = {}

    timed_forward = interleaved_medians(
        {name: (call, samples[name]) for name, call in forwards.items()}, tiny
    )
    timed_backward = interleaved_medians(
        {name: (call, samples[name]) for name, call in backwards.items()}, tiny
    )
    result["generated"] = {}
    for name in forwards:
        result[name]["forward"] = timed_forward[name]
        result[name]["backward"] = timed_backward[name]

    # The reference's peak is measured too when one call of it is cheap.
    if reference_layer is not None:
        if timed_backward["reference"]["median_s"] < 5.0:
            peak = peak_bytes(backwards["reference"])
            result["reference"]["backward_peak_bytes"] = peak
    peak = peak_bytes(backwards["generated"])
    result["generated"]["backward_peak_bytes"] = peak
    # Rounded: a few bytes of Python objects grow with the batch too.
    doubled = _peak_bytes_of_double_batch(layer, x, target, output_grad)
    result["generated"]["backward_input_arrays"] = round((doubled - peak) / x.nbytes, 2)
    return result


def _peak_bytes_of_double_batch(layer, x, target, output_grad):
    """The generated backward's peak on the batch repeated twice.

    Twice the batch minus once the batch leaves what grows with the batch:
    divided by the input's size, the number of input-sized arrays the backward
    allocates, without the per-feature vectors and parameter gradients.
    """
    x = np.concatenate([x, x])
    if target is not None:
        target = np.concatenate([target, target])
    if output_grad is not None:
        output_grad = np.concatenate([output_grad, output_grad])
    forward, backward = _numpy_calls(layer, x, target, output_grad)
    forward()
    return peak_bytes(backward)

"""A numerical check of any Module's backward pass by central differences.

The backward pass of a layer is a vector-Jacobian product: given ``output_grad``
it returns the gradient of the scalar ``sum(forward(x) * output_grad)`` with
respect to the input and to each parameter. This module estimates the same
gradients one element at a time::

    grad[j] ~ (f(x + step * e_j) - f(x - step * e_j)) / (2 * step)

and compares them with what ``backward`` returns. ``output_grad`` should be
random: with an all-ones ``output_grad`` a layer whose true gradient is zero
(the sum of a batch normalization's outputs, say) passes whatever it returns.

Only float64 is accepted: with float32 the rounding error of ``f`` divided by
``step`` swamps the derivative.

The checker calls ``forward`` many times and needs it to be a fixed function of
the input and the parameters. A forward that draws random numbers (Dropout in
training mode) must be made deterministic by the caller, for instance by giving
it a generator that replays the same numbers on every call; ``check_gradients``
raises a ValueError when two forwards of the same input differ. Forward side
effects that do not change the output, such as the moving statistics of a batch
normalization, are left as the last forward set them.
"""

from dataclasses import dataclass

import numpy as np

from layers.random import make_generator


def _expect_float64(caller, argument, value):
    array = np.asarray(value)
    if array.dtype != np.float64:
        raise TypeError(
            f"{caller} expects {argument} as a float64 array, since finite "
            f"differences lose the derivative to rounding in lower precision; "
            f"got dtype {array.dtype}"
        )
    return array


def _parameters(caller, module):
    parameters = module.get_parameters()
    for index, parameter in enumerate(parameters):
        argument = f"parameter {index} of {type(module).__name__}"
        _expect_float64(caller, argument, parameter)
    return parameters


def _objective(module, input, output_grad):
    # The scalar whose gradient backward computes: the inner product of the
    # output with the upstream gradient.
    return np.sum(module.forward(input) * output_grad)


def _central_differences(module, input, output_grad, array, step):
    # Perturbs ``array`` in place, one element at a time, and restores it.
    grad = np.zeros_like(array)
    for index in np.ndindex(array.shape):
        original = array[index]
        try:
            array[index] = original + step
            plus = _objective(module, input, output_grad)
            array[index] = original - step
            minus = _objective(module, input, output_grad)
        finally:
            array[index] = original
        grad[index] = (plus - minus) / (2 * step)
    return grad


def numerical_input_grad(module, input, output_grad, step=1e-6):
    """Estimates the input gradient of ``module`` by central differences.

    Args:
        module: any Module whose forward is deterministic.
        input: a float64 array the module accepts.
        output_grad: a float64 array shaped like the module's output.
        step: the perturbation of each element.

    Returns:
        A float64 array shaped like ``input``. ``input`` itself is not changed.

    Raises:
        TypeError: ``input`` or ``output_grad`` is not float64.
    """
    caller = "numerical_input_grad"
    input = _expect_float64(caller, "input", input).copy()
    output_grad = _expect_float64(caller, "output_grad", output_grad)
    return _central_differences(module, input, output_grad, input, step)


def numerical_parameter_grads(module, input, output_grad, step=1e-6):
    """Estimates the gradient of each parameter of ``module`` by central differences.

    The arrays of ``module.get_parameters()`` are perturbed in place and each
    element is restored right after, also when forward raises.

    Args:
        module: any Module whose forward is deterministic.
        input: a float64 array the module accepts.
        output_grad: a float64 array shaped like the module's output.
        step: the perturbation of each element.

    Returns:
        A list of float64 arrays in the order of ``get_parameters()``.

    Raises:
        TypeError: ``input``, ``output_grad`` or a parameter is not float64.
    """
    caller = "numerical_parameter_grads"
    input = _expect_float64(caller, "input", input)
    output_grad = _expect_float64(caller, "output_grad", output_grad)
    return [
        _central_differences(module, input, output_grad, parameter, step)
        for parameter in _parameters(caller, module)
    ]


@dataclass(frozen=True)
class GradientComparison:
    """How one analytic gradient compares with its numerical estimate.

    Attributes:
        name: ``input_grad`` or ``grad_<parameter>``.
        max_abs_error: the largest ``|analytic - numerical|``.
        max_rel_error: ``max_abs_error`` divided by the largest ``|numerical|``
            (normwise, so entries that are zero do not blow it up); 0 when both
            gradients are zero.
        passed: every entry satisfies ``|analytic - numerical| <= atol +
            rtol * |numerical|``.
    """

    name: str
    max_abs_error: float
    max_rel_error: float
    passed: bool


@dataclass(frozen=True)
class GradcheckReport:
    """The outcome of ``check_gradients``: one comparison per gradient.

    Attributes:
        module: the repr of the checked module.
        comparisons: the input gradient first, then the parameters in order.
        rtol: the relative tolerance used.
        atol: the absolute tolerance used.
    """

    module: str
    comparisons: tuple
    rtol: float
    atol: float

    @property
    def passed(self):
        """True when every gradient is within tolerance."""
        return all(comparison.passed for comparison in self.comparisons)

    @property
    def max_abs_error(self):
        """The largest absolute error over all gradients."""
        return max(comparison.max_abs_error for comparison in self.comparisons)

    def __str__(self):
        verdict = "passed" if self.passed else "FAILED"
        lines = [
            f"gradient check of {self.module} {verdict} "
            f"(rtol={self.rtol:g}, atol={self.atol:g})"
        ]
        for comparison in self.comparisons:
            mark = "ok" if comparison.passed else "FAILED"
            lines.append(
                f"  {comparison.name}: max abs error {comparison.max_abs_error:.3e}, "
                f"max rel error {comparison.max_rel_error:.3e}  {mark}"
            )
        return "\n".join(lines)


def _compare(name, analytic, numerical, rtol, atol):
    if analytic.shape != numerical.shape:
        # A gradient of the wrong shape is wrong, however its entries broadcast.
        return GradientComparison(name, float("inf"), float("inf"), False)
    error = np.abs(analytic - numerical)
    max_abs_error = float(error.max())
    scale = float(np.abs(numerical).max())
    if scale > 0:
        max_rel_error = max_abs_error / scale
    else:
        max_rel_error = 0.0 if max_abs_error == 0 else float("inf")
    passed = bool(np.all(error <= atol + rtol * np.abs(numerical)))
    return GradientComparison(name, max_abs_error, max_rel_error, passed)


def parameter_attributes(module, parameters):
    """The attribute names of ``parameters`` in ``module`` (``parameter_<i>``
    where none holds the very array): modules do not name their parameters."""
    names = []
    for index, parameter in enumerate(parameters):
        attribute = next(
            (key for key, value in vars(module).items() if value is parameter),
            f"parameter_{index}",
        )
        names.append(attribute)
    return names


def check_gradients(
    module, input, output_grad=None, rng=None, rtol=1e-6, atol=1e-8, step=1e-6
):
    """Compares ``module.backward`` with central differences of ``module.forward``.

    The parameter gradients are zeroed first, so that the comparison sees one
    backward's worth of accumulation; they hold that backward's result after.

    Args:
        module: any Module; its forward must be deterministic (see the module
            docstring for Dropout).
        input: a float64 array the module accepts.
        output_grad: a float64 array shaped like the output; None draws one from
            the standard normal distribution.
        rng: None, an int seed or a ``numpy.random.Generator`` for that draw.
        rtol: the relative tolerance of each entry.
        atol: the absolute tolerance of each entry.
        step: the finite-difference step.

    Returns:
        A ``GradcheckReport``; its ``passed`` says whether every gradient agreed.

    Raises:
        TypeError: ``input``, ``output_grad`` or a parameter is not float64.
        ValueError: ``output_grad`` is not shaped like the output, or forward
            is not deterministic.
    """
    caller = "check_gradients"
    input = _expect_float64(caller, "input", input)
    parameters = _parameters(caller, module)

    output = np.array(module.forward(input))
    if output_grad is None:
        output_grad = make_generator(rng).standard_normal(output.shape)
    output_grad = _expect_float64(caller, "output_grad", output_grad)
    if output_grad.shape != output.shape:
        raise ValueError(
            f"check_gradients expects output_grad shaped like the output of "
            f"{module!r}, {output.shape}; got {output_grad.shape}"
        )

    module.zero_grad()
    analytic_input_grad = np.array(module.backward(input, output_grad))
    analytic_parameter_grads = [np.array(g) for g in module.get_parameters_grad()]

    if not np.array_equal(module.forward(input), output):
        raise ValueError(
            f"check_gradients needs a deterministic forward, but {module!r} gave "
            "two different outputs for the same input; fix its randomness first "
            "(for Dropout in training mode, a generator that replays its numbers)"
        )

    names = ["input_grad"]
    names += [f"grad_{name}" for name in parameter_attributes(module, parameters)]
    analytic = [analytic_input_grad, *analytic_parameter_grads]
    numerical = [
        numerical_input_grad(module, input, output_grad, step),
        *numerical_parameter_grads(module, input, output_grad, step),
    ]
    comparisons = tuple(
        _compare(name, a, n, rtol, atol)
        for name, a, n in zip(names, analytic, numerical, strict=True)
    )
    return GradcheckReport(repr(module), comparisons, rtol, atol)

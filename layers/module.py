"""The Module contract every layer follows, reference and generated alike.

Vocabulary used across the runtime:

- ``input``: the array a layer's ``forward`` receives.
- ``output``: what ``forward`` returns; kept in ``self.output``.
- ``output_grad``: the upstream gradient ``backward`` receives, shaped like
  ``output``.
- ``input_grad``: what ``backward`` returns, shaped like ``input``; kept in
  ``self.input_grad``.
- ``grad_<param>``: the gradient of a parameter. Parameter gradients accumulate
  over ``backward`` calls until ``zero_grad()``.
"""


class Module:
    """Base class: forward, backward, parameters and the train / evaluate mode.

    Subclasses implement ``_compute_output``, ``_compute_input_grad`` and, when
    they have parameters, ``_update_parameters_grad``, ``get_parameters`` and
    ``get_parameters_grad``.
    """

    def __init__(self):
        self.output = None
        self.input_grad = None
        self.training = True

    def forward(self, input):
        """Computes the layer's output for ``input`` and keeps it in ``output``."""
        self.output = self._compute_output(input)
        return self.output

    def backward(self, input, output_grad):
        """Returns the input gradient; accumulates the parameter gradients."""
        self.input_grad = self._compute_input_grad(input, output_grad)
        self._update_parameters_grad(input, output_grad)
        return self.input_grad

    def _compute_output(self, input):
        raise NotImplementedError(f"{type(self).__name__} has no forward pass")

    def _compute_input_grad(self, input, output_grad):
        raise NotImplementedError(f"{type(self).__name__} has no backward pass")

    def _update_parameters_grad(self, input, output_grad):
        """Adds this batch's parameter gradients; layers without parameters skip."""

    def zero_grad(self):
        """Sets every parameter gradient to zero, in place."""
        for grad in self.get_parameters_grad():
            grad.fill(0)

    def get_parameters(self):
        """The parameter arrays, in a fixed order."""
        return []

    def get_parameters_grad(self):
        """The parameter gradients, in the order of ``get_parameters()``."""
        return []

    def train(self):
        """Switches to training mode."""
        self.training = True

    def evaluate(self):
        """Switches to evaluation mode."""
        self.training = False

    def _extra_repr(self):
        return ""

    def __repr__(self):
        mode = "train" if self.training else "evaluate"
        extra = self._extra_repr()
        fields = f"{extra}, mode={mode}" if extra else f"mode={mode}"
        return f"{type(self).__name__}({fields})"


class Criterion:
    """Base class of the losses: ``forward(input, target) -> float`` and
    ``backward(input, target) -> input_grad``, the gradient of the loss."""

    def __init__(self):
        self.output = None
        self.input_grad = None

    def forward(self, input, target):
        """The loss; kept in ``output``."""
        self.output = self._compute_output(input, target)
        return self.output

    def backward(self, input, target):
        """The gradient of the loss with respect to ``input``."""
        self.input_grad = self._compute_input_grad(input, target)
        return self.input_grad

    def _compute_output(self, input, target):
        raise NotImplementedError(f"{type(self).__name__} has no forward pass")

    def _compute_input_grad(self, input, target):
        raise NotImplementedError(f"{type(self).__name__} has no backward pass")

    def __repr__(self):
        return f"{type(self).__name__}()"

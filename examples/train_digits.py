"""A real training run: a small convolutional network of generated layers.

Trains on the 8x8 digit images scikit-learn ships (nothing is downloaded) and
holds out a stratified test split. Every layer comes from ``layers.generated``;
the example adds only the glue: a ``Sequential`` container, a reshape that lets
the (batch, features) layers act on a (batch, channel, row, column) activation,
and an Adam step over ``get_parameters()`` / ``get_parameters_grad()``::

    Conv2d(1, 16, 3) -> BatchNormalization -> ChannelwiseScaling -> ReLU
    -> MaxPool2d(2) -> Flatten -> Dropout -> Linear(256, 10) -> LogSoftMax

with ClassNLLCriterion as the loss. A progress bar shows the running loss;
the last line printed is the test accuracy.

Run with ``python examples/train_digits.py`` after ``pip install -e ".[examples]"``
(``--help`` lists the options).
"""

import argparse
import time

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split
from tqdm import tqdm

from layers.generated import (
    BatchNormalization,
    ChannelwiseScaling,
    ClassNLLCriterion,
    Conv2d,
    Dropout,
    Flatten,
    Linear,
    LogSoftMax,
    MaxPool2d,
    ReLU,
)


class Sequential:
    """Layers applied in order; keeps each layer's input for ``backward``."""

    def __init__(self, *layers):
        self.layers = list(layers)
        self.inputs = []

    def forward(self, input):
        self.inputs = []
        for layer in self.layers:
            self.inputs.append(input)
            input = layer.forward(input)
        return input

    def backward(self, input, output_grad):
        """Backpropagates through the last ``forward``, which ``input`` fed."""
        if not self.inputs or self.inputs[0] is not input:
            raise ValueError(
                "Sequential.backward expects the input of the last forward"
            )
        for layer, layer_input in zip(
            reversed(self.layers), reversed(self.inputs), strict=True
        ):
            output_grad = layer.backward(layer_input, output_grad)
        return output_grad

    def get_parameters(self):
        return [p for layer in self.layers for p in layer.get_parameters()]

    def get_parameters_grad(self):
        return [g for layer in self.layers for g in layer.get_parameters_grad()]

    def zero_grad(self):
        for layer in self.layers:
            layer.zero_grad()

    def train(self):
        for layer in self.layers:
            layer.train()

    def evaluate(self):
        for layer in self.layers:
            layer.evaluate()


class OnColumns:
    """Runs a (batch, features) layer on a (batch, C, H, W) activation.

    Each (channel, row, column) becomes one column, so BatchNormalization
    normalizes, and ChannelwiseScaling scales, every position of every channel
    on its own.
    """

    def __init__(self, layer):
        self.layer = layer

    def forward(self, input):
        flat = self.layer.forward(input.reshape(len(input), -1))
        return flat.reshape(input.shape)

    def backward(self, input, output_grad):
        rows = len(input)
        grad = self.layer.backward(
            input.reshape(rows, -1), output_grad.reshape(rows, -1)
        )
        return grad.reshape(input.shape)

    def get_parameters(self):
        return self.layer.get_parameters()

    def get_parameters_grad(self):
        return self.layer.get_parameters_grad()

    def zero_grad(self):
        self.layer.zero_grad()

    def train(self):
        self.layer.train()

    def evaluate(self):
        self.layer.evaluate()


class Adam:
    """Adam (Kingma and Ba, 2015), updating the parameter arrays in place."""

    def __init__(self, model, lr=1e-3, betas=(0.9, 0.999), eps=1e-8):
        self.model, self.lr, self.betas, self.eps = model, lr, betas, eps
        self.moments = [
            (np.zeros_like(p), np.zeros_like(p)) for p in model.get_parameters()
        ]
        self.steps = 0

    def step(self):
        self.steps += 1
        beta1, beta2 = self.betas
        # Both bias corrections folded into the step size, as the paper allows.
        lr = self.lr * np.sqrt(1 - beta2**self.steps) / (1 - beta1**self.steps)
        params = self.model.get_parameters()
        grads = self.model.get_parameters_grad()
        for param, grad, (mean, square) in zip(
            params, grads, self.moments, strict=True
        ):
            mean += (1 - beta1) * (grad - mean)
            square += (1 - beta2) * (grad * grad - square)
            param -= lr * mean / (np.sqrt(square) + self.eps)


def build_model(channels, dropout, seed):
    """The network; each layer with randomness gets its own seed."""
    columns = channels * 8 * 8
    scaling = ChannelwiseScaling(columns, rng=seed + 1)
    # Start as the identity after normalization, as is usual for batch norm,
    # instead of the small random gamma and beta the layer draws.
    scaling.gamma[:] = 1.0
    scaling.beta[:] = 0.0
    return Sequential(
        Conv2d(1, channels, 3, rng=seed),
        OnColumns(BatchNormalization(alpha=0.9)),
        OnColumns(scaling),
        ReLU(),
        MaxPool2d(2),
        Flatten(),
        Dropout(dropout, rng=seed + 2),
        Linear(channels * 4 * 4, 10, rng=seed + 3),
        LogSoftMax(),
    )


def load_split(test_size, seed):
    """Digit images scaled to [0, 1] as (batch, 1, 8, 8), split stratified."""
    digits = load_digits()
    images = (digits.images / 16.0)[:, None, :, :]
    return train_test_split(
        images,
        digits.target,
        test_size=test_size,
        stratify=digits.target,
        random_state=seed,
    )


def accuracy(model, images, labels, batch_size=256):
    model.evaluate()
    predictions = [
        model.forward(images[start : start + batch_size]).argmax(axis=1)
        for start in range(0, len(images), batch_size)
    ]
    return float(np.mean(np.concatenate(predictions) == labels))


def train(model, images, labels, epochs, batch_size, lr, seed, progress=True):
    """Trains ``model`` in place; returns the loss of every step, epoch by epoch."""
    criterion = ClassNLLCriterion()
    optimizer = Adam(model, lr=lr)
    order_rng = np.random.default_rng(seed + 4)
    steps_per_epoch = -(-len(images) // batch_size)
    losses = np.zeros((epochs, steps_per_epoch))
    bar = tqdm(total=epochs * steps_per_epoch, disable=not progress, unit="step")
    running = None
    for epoch in range(epochs):
        model.train()
        order = order_rng.permutation(len(images))
        for step in range(steps_per_epoch):
            batch = order[step * batch_size : (step + 1) * batch_size]
            x, y = images[batch], labels[batch]

            log_probs = model.forward(x)
            loss = criterion.forward(log_probs, y)
            model.zero_grad()
            model.backward(x, criterion.backward(log_probs, y))
            optimizer.step()

            losses[epoch, step] = loss
            running = loss if running is None else 0.9 * running + 0.1 * loss
            bar.set_postfix(epoch=epoch + 1, loss=f"{running:.4f}", refresh=False)
            bar.update()
    bar.close()
    return losses


def parse_args(argv=None):
    parser = argparse.ArgumentParser(
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument(
        "--epochs", type=int, default=20, help="passes over the training set"
    )
    parser.add_argument(
        "--batch-size", type=int, default=32, help="samples per Adam step"
    )
    parser.add_argument("--lr", type=float, default=3e-3, help="Adam's step size")
    parser.add_argument(
        "--channels", type=int, default=16, help="output channels of the convolution"
    )
    parser.add_argument(
        "--dropout", type=float, default=0.25, help="probability of dropping an entry"
    )
    parser.add_argument(
        "--test-size", type=float, default=0.2, help="fraction of digits held out"
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the split, weights and dropout"
    )
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar"
    )
    return parser.parse_args(argv)


def main(argv=None):
    """Trains and evaluates; returns the per-step losses and the test accuracy."""
    args = parse_args(argv)
    train_x, test_x, train_y, test_y = load_split(args.test_size, args.seed)
    print(
        f"digits: {len(train_x)} training and {len(test_x)} test images of 8x8, "
        f"{args.epochs} epochs of batch {args.batch_size}"
    )
    model = build_model(args.channels, args.dropout, args.seed)

    start = time.perf_counter()
    losses = train(
        model,
        train_x,
        train_y,
        args.epochs,
        args.batch_size,
        args.lr,
        args.seed,
        progress=not args.no_progress,
    )
    seconds = time.perf_counter() - start
    print(
        f"mean training loss: first epoch {losses[0].mean():.4f}, "
        f"last epoch {losses[-1].mean():.4f} ({seconds:.1f} s)"
    )
    print(f"train accuracy: {accuracy(model, train_x, train_y):.4f}")
    test_accuracy = accuracy(model, test_x, test_y)
    print(f"test accuracy: {test_accuracy:.4f}")
    return losses, test_accuracy


if __name__ == "__main__":
    main()

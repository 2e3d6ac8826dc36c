"""Generated layers on real data: scikit-learn's 8x8 digits.

Runs a batch of digit images through Conv2d -> BatchNormalization ->
ChannelwiseScaling -> Dropout twice, once with the generated layers and once
with the handwritten reference layers built from the same seeds, and prints the
largest difference between the two for the output, the input gradient and
every parameter gradient. Then it checks the generated input gradient against
central finite differences on a sample of pixels.

Run with ``python examples/digits_forward_backward.py`` after
``pip install -e ".[examples]"``.
"""

import numpy as np
from sklearn.datasets import load_digits

import layers.generated as generated
import layers.reference as reference

BATCH = 32
CHANNELS = 4
SEED = 0


def build(kind):
    """The four layers of ``kind`` (a module), seeded identically."""
    return [
        kind.Conv2d(1, CHANNELS, 3, rng=SEED),
        kind.BatchNormalization(alpha=0.9),
        kind.ChannelwiseScaling(CHANNELS * 64, rng=SEED + 1),
        kind.Dropout(p=0.2, rng=SEED + 2),
    ]


def forward(network, images):
    conv, norm, scale, drop = network
    features = conv.forward(images)
    flat = features.reshape(len(images), -1)
    return drop.forward(scale.forward(norm.forward(flat)))


def backward(network, images, output_grad):
    """The input gradient; parameter gradients accumulate in the layers."""
    conv, norm, scale, drop = network
    features = conv.forward(images)
    flat = features.reshape(len(images), -1)
    normed = norm.forward(flat)
    scaled = scale.forward(normed)
    grad = drop.backward(scaled, output_grad)
    grad = scale.backward(normed, grad)
    grad = norm.backward(flat, grad)
    return conv.backward(images, grad.reshape(features.shape))


def fixed_mask_forward(network, images):
    """The forward pass with the last training pass's Dropout mask held fixed."""
    conv, norm, scale, drop = network
    flat = conv.forward(images).reshape(len(images), -1)
    return scale.forward(norm.forward(flat)) * drop.mask / (1 - drop.p)


def parameter_grads(network):
    return [grad for layer in network for grad in layer.get_parameters_grad()]


def main():
    digits = load_digits()
    images = (digits.images[:BATCH] / 16.0)[:, None, :, :].astype(np.float64)
    print(
        f"input: {images.shape[0]} digit images of {images.shape[2]}x{images.shape[3]}"
    )
    rng = np.random.default_rng(SEED)

    networks = {"generated": build(generated), "reference": build(reference)}
    outputs = {name: forward(net, images) for name, net in networks.items()}
    masks = [net[3].mask for net in networks.values()]
    print(f"same Dropout mask from the same seed: {np.array_equal(*masks)}")

    # A random upstream gradient: an all-ones one would check nothing, since the
    # gradient of sum(batchnorm(x)) is zero.
    output_grad = rng.normal(size=outputs["generated"].shape)
    grads = {name: backward(net, images, output_grad) for name, net in networks.items()}

    print("largest |generated - reference|:")
    print(
        "  output        "
        f"{np.abs(outputs['generated'] - outputs['reference']).max():.3e}"
    )
    print(
        f"  input_grad    {np.abs(grads['generated'] - grads['reference']).max():.3e}"
    )
    names = ["Conv2d.gradW", "Conv2d.gradb", "gradGamma", "gradBeta"]
    pairs = zip(*(parameter_grads(net) for net in networks.values()), strict=True)
    for name, (mine, theirs) in zip(names, pairs, strict=True):
        print(f"  {name:<13} {np.abs(mine - theirs).max():.3e}")

    network, step, worst = networks["generated"], 1e-6, 0.0
    for flat_position in rng.choice(images.size, size=20, replace=False):
        position = np.unravel_index(flat_position, images.shape)
        plus, minus = images.copy(), images.copy()
        plus[position] += step
        minus[position] -= step
        values = [
            np.sum(fixed_mask_forward(network, s) * output_grad) for s in (plus, minus)
        ]
        numerical = (values[0] - values[1]) / (2 * step)
        worst = max(worst, abs(numerical - grads["generated"][position]))
    print(f"largest |generated - finite differences| on 20 pixels: {worst:.3e}")


if __name__ == "__main__":
    main()

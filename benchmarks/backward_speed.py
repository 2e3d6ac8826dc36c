"""Backward-pass speed of the generated layers against the reference layers.

Prints the median time of ``backward`` (input and parameter gradients) of each
layer, generated and reference, measured in the same run, and their ratio.
Not a test: timings depend on the machine; only the ratios measured together
mean something.

    python benchmarks/backward_speed.py            # the sizes of the closing note
    python benchmarks/backward_speed.py --tiny     # a smoke run, as CI does
"""

import argparse
import statistics
import time

import numpy as np

import layers.generated as generated
import layers.reference as reference

CASES = {
    "BatchNormalization B=256 N=1024": (
        lambda kind: kind.BatchNormalization(),
        (256, 1024),
    ),
    "Conv2d B=8 16->16 32x32 K=3": (
        lambda kind: kind.Conv2d(16, 16, 3, rng=0),
        (8, 16, 32, 32),
    ),
    "ChannelwiseScaling B=256 N=1024": (
        lambda kind: kind.ChannelwiseScaling(1024, rng=0),
        (256, 1024),
    ),
    "Dropout B=256 N=1024": (lambda kind: kind.Dropout(0.5, rng=0), (256, 1024)),
}

TINY = {
    "BatchNormalization B=256 N=1024": (8, 16),
    "Conv2d B=8 16->16 32x32 K=3": (2, 16, 6, 6),
    "ChannelwiseScaling B=256 N=1024": (8, 1024),
    "Dropout B=256 N=1024": (8, 16),
}


def median_seconds(function, repeats):
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="tiny sizes, one repeat")
    parser.add_argument("--repeats", type=int, default=15)
    args = parser.parse_args(argv)
    repeats = 1 if args.tiny else args.repeats

    print(
        f"{'backward, float64':<34}{'generated':>12}{'reference':>12}{'speed-up':>10}"
    )
    for name, (make, shape) in CASES.items():
        shape = TINY[name] if args.tiny else shape
        rng = np.random.default_rng(0)
        x = rng.normal(size=shape)
        output_grad = rng.normal(size=shape)
        seconds = {}
        for label, kind in (("generated", generated), ("reference", reference)):
            layer = make(kind)
            layer.forward(x)
            seconds[label] = median_seconds(
                lambda layer=layer, x=x, g=output_grad: layer.backward(x, g), repeats
            )
        ratio = seconds["reference"] / seconds["generated"]
        print(
            f"{name:<34}{seconds['generated'] * 1e3:>10.2f}ms"
            f"{seconds['reference'] * 1e3:>10.2f}ms{ratio:>9.1f}x"
        )


if __name__ == "__main__":
    main()

"""Channelwise scaling: ``y[b, n] = x[b, n] * gamma[n] + beta[n]``."""

from derivations.notation import Model


def build() -> Model:
    model = Model(
        "ChannelwiseScaling",
        "Scales and shifts each feature by learnable gamma and beta.",
        source="derivations/models/channelwise_scaling.py",
    )
    B = model.size("B", example=256)
    N = model.size("N", example=1024, bound_to="n_out")
    b = model.index("b", B)
    n = model.index("n", N)
    model.argument("n_out")
    model.init_scale = "1.0 / np.sqrt(n_out)"
    x = model.input("x", (b, n), layout=("batch", "n_out"))
    gamma = model.parameter("gamma", (n,), "gamma", "gradGamma")
    beta = model.parameter("beta", (n,), "beta", "gradBeta")

    for mode in ("train", "evaluate"):
        with model.mode(mode):
            model.define("y", (b, n), x[b, n] * gamma[n] + beta[n])
    return model

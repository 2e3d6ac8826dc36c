"""A model's generated class, compiled in memory: nothing is written."""

from codegen.emit_module import emit_module
from derivations.notation import Model


def layer_class(model: Model):
    """The class ``python -m codegen`` would write for ``model``, ready to use.

    Useful to check a handwritten layer against a model directly, e.g.
    ``compare_layers(mine, layer_class(model)(n_features), shape)``.
    """
    if not isinstance(model, Model):
        raise TypeError(
            f"layer_class expects a derivations.Model; got {type(model).__name__}"
        )
    module_name = f"_generated_{model.name}"
    text = emit_module(model, module_name).text
    namespace = {"__name__": module_name}
    exec(compile(text, f"<generated from {model.source}>", "exec"), namespace)
    return namespace[model.name]

"""Starting one network from another: the papers' recipe for teachers and students.

MAD (Nie et al. 2021, section 3) makes its k-bit teachers by quantizing the float network,
and Bi-Real Net, ReActNet and the thesis start their binary students from the real-valued
network. Here both go the same way:

1. `copy_matching_weights(float_model, model)`: every variable of the float model whose layer
   and variable names and shape match (the latent kernel of a quantized convolution matches
   the float kernel) is copied; the quantizers' own variables (LSQ steps, XNOR++ scales) keep
   their initial values.
2. `recalibrate_batch_norm` (kerasbnn.utils): the copied BatchNorm statistics describe the
   float network's activations, not the quantized ones, so they are recomputed exactly (the
   population mean and variance of each BatchNorm input over `batches` training batches,
   in training mode with the weights fixed; no momentum is involved).

`from_float` does both; the pipeline then fine-tunes the teacher.
"""

from kerasbnn.utils.batch_norm import batch_norm_layers, recalibrate_batch_norm

__all__ = ["copy_matching_weights", "from_float"]


def copy_matching_weights(source, target):
    """Copies every weight of `source` into the layer of `target` with the same name.

    A weight is copied when both layers have a variable of the same name and shape (the
    latent kernel of a `QuantConv2D` matches the float `Conv2D` kernel); the student's extra
    variables (XNOR++ scales, shifts) keep their initial values.

    Args:
        source: the float teacher.
        target: the student built by the same builder.

    Returns:
        The number of variables copied.

    Raises:
        ValueError: if no variable matches (the models do not share layer names).
    """
    copied = 0
    source_layers = {layer.name: layer for layer in source.layers}
    for layer in target.layers:
        other = source_layers.get(layer.name)
        if other is None:
            continue
        by_name = {_short_name(w): w for w in other.weights}
        for weight in layer.weights:
            match = by_name.get(_short_name(weight))
            if match is not None and tuple(match.shape) == tuple(weight.shape):
                weight.assign(match)
                copied += 1
    if copied == 0:
        raise ValueError(
            f"No weight of {source.name!r} matches a weight of {target.name!r} by layer and "
            "variable name: build the student with the teacher's builder."
        )
    return copied


def _short_name(variable):
    return variable.path.split("/")[-1]


def from_float(float_model, model, dataset=None, batches=None):
    """Copies `float_model`'s matching weights into `model`, then recomputes its BatchNorm
    statistics over `batches` batches of `dataset` (skipped when `dataset` is None or the
    model has no trainable BatchNormalization).

    Args:
        float_model: the trained float network.
        model: the same architecture, built by the same builder (quantized or binary).
        dataset: training batches `(x, y)`, best without augmentation.
        batches: how many batches; None: all of `dataset`.

    Returns:
        `model`, changed in place.

    Raises:
        ValueError: if no variable matches (the message says to use the same builder).
    """
    copy_matching_weights(float_model, model)
    if dataset is not None and batch_norm_layers(model):
        recalibrate_batch_norm(model, dataset, steps=batches, jit_compile=False)
    return model

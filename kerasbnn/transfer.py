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

Between the two, `init_lsq_steps` sets every LSQ step from the values it will quantize (the
copied kernels, and the float network's activations on the first batch) instead of LSQ's
N(0, 1) guess, which does not describe a trained network's activations.

`from_float` does all three; the pipeline then fine-tunes the teacher.
"""

import math

import keras
import numpy as np

from kerasbnn.utils.batch_norm import batch_norm_layers, recalibrate_batch_norm

__all__ = ["copy_matching_weights", "from_float", "init_lsq_steps"]

#: The variable each quantizer role of a `QuantizerMixin` layer quantizes, besides `input`.
_ROLE_VARIABLES = {"kernel": "kernel", "depthwise": "depthwise_kernel"}


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
    if dataset is not None and _lsq_roles(model):  # a binary student has none: no batch read
        init_lsq_steps(float_model, model, next(iter(dataset))[0])
    if dataset is not None and batch_norm_layers(model):
        recalibrate_batch_norm(model, dataset, steps=batches, jit_compile=False)
    return model


def _lsq_roles(model):
    """`[(layer, role, quantizer, step variable)]` of every LSQ quantizer of `model` (the
    quantizers with a learned `step` and grid bounds `q_p`)."""
    found = []
    for layer in model.layers:
        for role, parameters in getattr(layer, "_quantizer_parameters", {}).items():
            quantizer = getattr(layer, f"{role}_quantizer", None)
            if "step" in parameters and hasattr(quantizer, "q_p"):
                found.append((layer, role, quantizer, parameters["step"]))
    return found


def init_lsq_steps(float_model, model, images):
    """Sets every LSQ step of `model` from the values it quantizes, so that the copy keeps the
    float network's function: the step, among LSQ's own rule and 100 multiples of it (0.05x to
    2x, geometric), s_0 = 2 <|v|> / sqrt(Q_P) (Esser et al., arXiv:1902.08153, section 2.1, computed
    "on the initial weights values or the first batch of activations"), with the least
    squared quantization error on those values.

    A kernel's step comes from the layer's own (copied) latent kernel; an input's from the
    same-named layer's input in `float_model` on `images` (inference mode): what the quantizer
    would see if everything before it kept the float function. Measured on a trained `bireal`
    ResNet-20 (width 0.5, 86.70% on 2,000 Fashion-MNIST test images), BatchNorm recomputed,
    before any fine-tuning: the 8/4/2-bit copies scored 85.90/74.50/37.05% with the N(0, 1)
    guess, 86.65/80.00/51.15% with LSQ's rule on the data, 86.75/85.15/48.05% with these
    least-error steps (one network; fine-tuning follows in the pipeline).

    Args:
        float_model: the float network the weights were copied from (a functional model).
        model: the quantized network, built by the same builder.
        images: one batch of training inputs.

    Returns:
        The number of steps set (0 when `model` has no LSQ quantizer).
    """
    roles = _lsq_roles(model)
    inputs = [(layer, q, step) for layer, role, q, step in roles if role == "input"]
    if inputs:
        probe = keras.Model(float_model.inputs,
                            [float_model.get_layer(layer.name).input for layer, _, _ in inputs])
        values = probe(images, training=False)
        values = values if isinstance(values, (list, tuple)) else [values]
        for (layer, quantizer, step), value in zip(inputs, values):
            step.assign(_lsq_step(value, quantizer))
    for layer, role, quantizer, step in roles:
        if role != "input":
            step.assign(_lsq_step(getattr(layer, _ROLE_VARIABLES[role]), quantizer))
    return len(roles)


def _lsq_step(values, quantizer):
    """The least-error step among multiples of 2 <|v|> / sqrt(Q_P) (`init_lsq_steps`), floored
    so that an all-zero tensor keeps a usable step."""
    v = np.asarray(keras.ops.convert_to_numpy(values), "float64").ravel()
    rule = max(2.0 * float(np.mean(np.abs(v))) / math.sqrt(quantizer.q_p), 1e-8)
    steps = rule * np.append(np.geomspace(0.05, 2.0, 100), 1.0)
    errors = [np.mean((np.clip(np.round(v / s), -quantizer.q_n, quantizer.q_p) * s - v) ** 2)
              for s in steps]
    return float(steps[int(np.argmin(errors))])

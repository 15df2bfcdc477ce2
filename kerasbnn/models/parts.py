"""Distillation points (`taps`) and stage-wise views (`parts`) of zoo models.

Both read only layer names (`stem_out`, `stage<i>_out`, `logits`), so they work on a model
reloaded from a `.keras` file without any extra metadata.
"""

import collections
import re

import keras

from kerasbnn.models.blocks import STEM_OUT

_STAGE = re.compile(r"stage(\d+)_out")


def _stage_layers(model):
    stages = []
    for layer in model.layers:
        match = _STAGE.fullmatch(layer.name)
        if match:
            stages.append((int(match.group(1)), layer.name))
    stages.sort()
    if not stages or [i for i, _ in stages] != list(range(1, len(stages) + 1)):
        raise ValueError(
            f"Model {model.name!r} has no consecutive stage taps named stage1_out, "
            "stage2_out, ...; "
            "taps() and parts() need a kerasbnn.models builder's model (or the same layer names)."
        )
    return [name for _, name in stages]


def taps(model):
    """Names of the model's feature distillation points, in forward order.

    They are the layers `stage1_out`, ..., `stageN_out`: the end of every stage for ResNets,
    every max-pool for VGG-Small, the last conv of each block for AlexNet. A teacher and a
    student built by the same builder have the same names with the same shapes at every
    precision, so `model.get_layer(name).output` lines up.

    Args:
        model: a model built by a `kerasbnn.models` builder.

    Returns:
        A list of layer names.

    Raises:
        ValueError: if the model has no `stage<i>_out` layers.
    """
    return _stage_layers(model)


def parts(model):
    """The model cut at its taps into callable Keras models that share its layers.

    `parts(model)` is an ordered dict `{"stem": ..., "stage1": ..., ..., "head": ...}` (no
    "head" for a model built with `include_top=False`);
    feeding each part's output to the next gives the whole model's output, and because the
    parts hold the original layer objects, training a part trains the model. A method can
    run one network's stage on another network's features (CMT-KD, LIT, progressive
    binarization).

    Args:
        model: a functional model built by a `kerasbnn.models` builder.

    Returns:
        `collections.OrderedDict` of name -> `keras.Model`.

    Raises:
        ValueError: if the model lacks the `stem_out` / `stage<i>_out` layers.
    """
    stages = _stage_layers(model)
    try:
        stem_out = model.get_layer(STEM_OUT).output
    except ValueError as error:
        raise ValueError(
            f"Model {model.name!r} has no {STEM_OUT!r} layer; "
            "parts() needs a kerasbnn.models model."
        ) from error
    result = collections.OrderedDict()
    inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
    result["stem"] = keras.Model(inputs, stem_out, name=f"{model.name}_stem")
    previous = stem_out
    for index, stage in enumerate(stages, start=1):
        output = model.get_layer(stage).output
        result[f"stage{index}"] = keras.Model(previous, output, name=f"{model.name}_stage{index}")
        previous = output
    outputs = model.outputs[0] if len(model.outputs) == 1 else model.outputs
    if outputs is not previous:  # a model built with include_top=False ends at its last tap
        result["head"] = keras.Model(previous, outputs, name=f"{model.name}_head")
    return result

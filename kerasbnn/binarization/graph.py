"""The layer graph of a Sequential or functional model, nested models flattened.

`flatten(model)` lists every call of a leaf layer (a layer that is not itself a model) with
the tensors it reads and writes, named `path:node`, where `path` is `outer/inner/layer`.
The connections come from the model's public config (`model.get_config()`: each layer's
`inbound_nodes` name the `keras_history` of the tensors it reads), the layers themselves from
`model.get_layer`. A nested model's inputs and outputs are aliases of the outer tensors, so
that the analysis sees one graph from the model input to its outputs.

`analyse(calls, outputs)` then walks that graph forward and backward:

- *non-negative by construction*: a tensor written by ReLU, ReLU6, sigmoid, softmax (an
  `Activation`, `ReLU` or `Softmax` layer, or a layer's own `activation=`), or by pooling,
  padding, reshaping, dropout, concatenation, addition... of such tensors only. A
  BatchNormalization after a ReLU is not (its offset can be negative).
- *raw*: a tensor computed from the model input without a convolution or dense layer
  (pixels, possibly rescaled, normalised or padded).
- *head*: a tensor from which a model output is reached without a convolution or dense layer.
"""

import dataclasses

import keras

_NONNEGATIVE_ACTIVATIONS = {
    keras.activations.relu: "relu",
    keras.activations.relu6: "relu6",
    keras.activations.sigmoid: "sigmoid",
    keras.activations.hard_sigmoid: "hard_sigmoid",
    keras.activations.softmax: "softmax",
    keras.activations.softplus: "softplus",
    keras.activations.exponential: "exponential",
}
# Layers whose output is non-negative when all their inputs are (order and sign preserving
# rearrangements, max / mean / sum / product of non-negative values, zero padding).
_SIGN_PRESERVING = tuple(
    getattr(keras.layers, name)
    for name in (
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
        "AveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
        "GlobalAveragePooling1D", "GlobalAveragePooling2D", "GlobalAveragePooling3D",
        "ZeroPadding1D", "ZeroPadding2D", "ZeroPadding3D", "Cropping1D", "Cropping2D",
        "Cropping3D", "UpSampling1D", "UpSampling2D", "UpSampling3D", "Flatten", "Reshape",
        "Permute", "RepeatVector", "Dropout", "SpatialDropout1D", "SpatialDropout2D",
        "SpatialDropout3D", "Concatenate", "Add", "Multiply", "Maximum", "Minimum", "Average",
        "Identity", "ActivityRegularization",
    )
)
# Layers that mix their input channels with learned weights: they end "raw" and "head" paths.
MIXING_LAYERS = (
    keras.layers.Conv1D, keras.layers.Conv2D, keras.layers.Conv3D, keras.layers.Conv1DTranspose,
    keras.layers.Conv2DTranspose, keras.layers.Conv3DTranspose, keras.layers.DepthwiseConv2D,
    keras.layers.SeparableConv1D, keras.layers.SeparableConv2D, keras.layers.Dense,
    keras.layers.EinsumDense,
)


@dataclasses.dataclass
class Call:
    """One call of a leaf layer: the layer, its path and the tensors it reads and writes."""

    layer: keras.layers.Layer
    path: str
    inputs: list
    output: str


def is_model(layer):
    return isinstance(layer, keras.Model)


def _tensor_refs(value, found):
    """Collects every `keras_history` of a serialized call's args / kwargs, in order."""
    if isinstance(value, dict):
        if value.get("class_name") == "__keras_tensor__":
            found.append(tuple(value["config"]["keras_history"]))
            return found
        for item in value.values():
            _tensor_refs(item, found)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _tensor_refs(item, found)
    return found


def _sequential(model, prefix, inputs, calls):
    current = inputs
    for layer in model.layers:
        if is_model(layer):
            current = flatten(layer, f"{prefix}{layer.name}/", current, calls)
        else:
            key = f"{prefix}{layer.name}:0"
            calls.append(Call(layer, f"{prefix}{layer.name}", list(current), key))
            current = [key]
    return current


def _refs(value):
    """A config's `input_layers` / `output_layers`: one ref, or a list of refs, as a list."""
    return [value] if value and isinstance(value[0], str) else list(value or [])


def _functional(model, prefix, inputs, calls):
    config = model.get_config()
    known = {}  # (layer name, node index, tensor index) or (name, node) -> tensor key
    for ref, key in zip(_refs(config["input_layers"]), inputs):
        known[tuple(ref[:3])] = key
    pending = [
        (entry["name"], i, _tensor_refs(node, []))
        for entry in config["layers"]
        if entry["class_name"] != "InputLayer"
        for i, node in enumerate(entry.get("inbound_nodes") or [])
    ]

    def resolve(ref):
        return known.get(tuple(ref[:3]), known.get(tuple(ref[:2])))

    while pending:
        waiting = [p for p in pending if any(resolve(r) is None for r in p[2])]
        for name, node, refs in (p for p in pending if p not in waiting):
            layer = model.get_layer(name)
            keys = [resolve(r) for r in refs]
            if is_model(layer):
                outs = flatten(layer, f"{prefix}{name}/", keys, calls)
                for t, key in enumerate(outs):
                    known[(name, node, t)] = key
            else:
                key = f"{prefix}{name}:{node}"
                calls.append(Call(layer, f"{prefix}{name}", keys, key))
                known[(name, node)] = key
        if len(waiting) == len(pending):
            raise ValueError(
                f"model {model.name!r}: the layers {sorted({p[0] for p in waiting})} read tensors "
                "that no layer of the model writes; binarize needs a connected functional graph."
            )
        pending = waiting
    return [resolve(ref) for ref in _refs(config["output_layers"])]


def flatten(model, prefix="", inputs=None, calls=None):
    """The leaf-layer calls of `model` (appended to `calls`) and its output tensor keys.

    Args:
        model: a Sequential or functional `keras.Model`, built.
        prefix: path of `model` inside the outermost model (`""` at the top).
        inputs: tensor keys the model's inputs alias (None: `"<input>:i"`).
        calls: the list to append to.

    Returns:
        The keys of the model's outputs.
    """
    calls = [] if calls is None else calls
    if inputs is None:
        inputs = [f"{prefix}<input>:{i}" for i in range(len(model.inputs))]
    if isinstance(model, keras.Sequential):
        return _sequential(model, prefix, inputs, calls)
    return _functional(model, prefix, inputs, calls)


def nonnegative_source(layer, inputs):
    """Why `layer`'s output is non-negative by construction (a short text), or None.

    Args:
        layer: a leaf layer.
        inputs: for each input tensor, the reason it is non-negative, or None.
    """
    if isinstance(layer, keras.layers.ReLU):
        slope = float(getattr(layer, "negative_slope", 0.0) or 0.0)
        threshold = float(getattr(layer, "threshold", 0.0) or 0.0)
        return f"{layer.name} (ReLU)" if slope == 0.0 and threshold >= 0.0 else None
    if isinstance(layer, keras.layers.Softmax):
        return f"{layer.name} (softmax)"
    activation = _NONNEGATIVE_ACTIVATIONS.get(getattr(layer, "activation", None))
    if activation is not None:
        return f"{layer.name} ({activation})"
    if isinstance(layer, _SIGN_PRESERVING) and inputs and all(inputs):
        return inputs[0]
    return None


@dataclasses.dataclass
class TensorFacts:
    """What the analysis knows about the input of one call."""

    nonnegative: str = None  # why the input is non-negative by construction, or None
    raw: bool = False  # computed from the model input without a conv / dense layer
    head: bool = False  # the output reaches a model output without a conv / dense layer


def analyse(calls, outputs, model_inputs):
    """`{id(call): TensorFacts}` for every call of `flatten`'s list.

    Args:
        calls: `flatten`'s calls, in an order where every tensor is written before it is read.
        outputs: the keys of the model outputs.
        model_inputs: the keys of the model inputs.
    """
    nonneg, raw = {}, {key: True for key in model_inputs}
    facts = {}
    for call in calls:
        reasons = [nonneg.get(key) for key in call.inputs]
        fact = TensorFacts(
            nonnegative=reasons[0] if reasons and all(reasons) else None,
            raw=any(raw.get(key, False) for key in call.inputs),
        )
        facts[id(call)] = fact
        nonneg[call.output] = nonnegative_source(call.layer, reasons)
        raw[call.output] = fact.raw and not isinstance(call.layer, MIXING_LAYERS)
    head = set(outputs)
    for call in reversed(calls):
        facts[id(call)].head = call.output in head
        if call.output in head and not isinstance(call.layer, MIXING_LAYERS):
            head.update(call.inputs)
    return facts


def ordered(calls):
    """`calls` sorted so that every tensor is written before it is read (stable)."""
    written = {call.output for call in calls}
    done, result, pending = set(), [], list(calls)
    while pending:
        ready = [c for c in pending if all(k in done or k not in written for k in c.inputs)]
        if not ready:
            raise ValueError("the model's layer graph has a cycle; binarize cannot order it.")
        result.extend(ready)
        done.update(c.output for c in ready)
        ready_ids = {id(c) for c in ready}
        pending = [c for c in pending if id(c) not in ready_ids]
    return result

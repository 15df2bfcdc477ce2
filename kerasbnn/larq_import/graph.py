"""A described larq model -> a Keras 3 model: layers, connections, then weights.

The legacy functional config lists each layer with `inbound_nodes`: one entry per call,
each a list of `[layer_name, node_index, tensor_index, kwargs]` for the call's inputs, or,
for operator layers (TFOpLambda), one such list whose kwargs hold the second operand
(`{"y": [layer_name, node_index, tensor_index]}` or `{"y": 0.5}`). Calls are replayed in
dependency order on Keras 3 layers of the same names.
"""

import keras
import numpy as np

from kerasbnn.larq_import import layers as import_layers
from kerasbnn.larq_import.errors import LarqImportError

_SUPPORTED_MODELS = ("Functional", "Sequential")
_CONSTANT = "_CONSTANT_VALUE"


def _is_ref(value):
    return (
        isinstance(value, list)
        and len(value) >= 3
        and isinstance(value[0], str)
        and isinstance(value[1], int)
        and isinstance(value[2], int)
    )


def _input_tensor(entry):
    config = entry["config"]
    shape = config.get("batch_input_shape") or config.get("batch_shape")
    if shape is None:
        raise LarqImportError(f"input layer {config.get('name')!r} has no shape.")
    if config.get("sparse") or config.get("ragged"):
        raise LarqImportError(f"input layer {config.get('name')!r} is sparse or ragged.")
    dtype = config.get("dtype") or "float32"
    return keras.Input(batch_shape=tuple(shape), dtype=dtype, name=config.get("name"))


def translate_all(model_config, described):
    """Translates every layer entry first, so that all problems are reported together.

    Returns:
        `{name: keras layer}` (operators and inputs excluded: they need their call).

    Raises:
        LarqImportError: listing every layer that cannot be rebuilt, with what is supported.
    """
    built, problems = {}, []
    for entry in model_config["layers"]:
        name = entry["config"].get("name", entry.get("name"))
        try:
            if entry["class_name"] == "TFOpLambda":
                _operator_layer(entry)
            elif entry["class_name"] != "InputLayer":
                built[name] = import_layers.translate(entry, described.get(name))
        except LarqImportError as error:
            problems.append(str(error))
    if problems:
        raise LarqImportError(
            f"{len(problems)} layer(s) cannot be imported:\n"
            + "\n".join(f"  - {p}" for p in problems)
            + f"\nThe importer rebuilds {import_layers.supported_summary()}.",
            problems,
        )
    return built


def _operator_node(entry):
    nodes = entry.get("inbound_nodes") or []
    if len(nodes) != 1 or not isinstance(nodes[0], list) or not isinstance(nodes[0][0], str):
        raise LarqImportError(f"operator layer {entry['config'].get('name')!r} has no single call.")
    return nodes[0]


def _operator_args(entry):
    """`(refs, constant, constant_first)` of an operator call: `x op y`, `x op c` or `c op x`."""
    node = _operator_node(entry)
    kwargs = node[3] if len(node) > 3 else {}
    extra = sorted(k for k, v in kwargs.items() if k not in ("y", "name") and v is not None)
    if "y" not in kwargs or extra:
        raise LarqImportError(
            f"operator layer {entry['config'].get('name')!r} is called with {sorted(kwargs)}."
        )
    second = kwargs["y"]
    if node[0] == _CONSTANT:  # `c op x`: the legacy API stores c in the tensor index slot
        if not _is_ref(second):
            raise LarqImportError(f"operator layer {entry['config'].get('name')!r} has no tensor.")
        return [second[:3]], node[2], True
    if _is_ref(second):
        return [node[:3], second[:3]], None, False
    return [node[:3]], second, False


def _operator_layer(entry):
    _, constant, constant_first = _operator_args(entry)
    return import_layers.translate_operator(entry, constant, constant_first)


def _call_inputs(entry, node):
    """`(refs, kwargs)` of one legacy node (a call of the entry's layer)."""
    if entry["class_name"] == "TFOpLambda":
        return _operator_args(entry)[0], {}
    refs = [ref[:3] for ref in node]
    kwargs = {}
    for ref in node:
        for key, value in (ref[3] if len(ref) > 3 else {}).items():
            if key != "training":
                raise LarqImportError(f"layer {entry['name']!r} is called with {key}={value!r}.")
            kwargs[key] = value
    return refs, kwargs


def _replay(model_config, built, tensors):
    """Calls every layer on its inputs, in dependency order; fills `tensors`."""
    pending = [
        (entry, i, node)
        for entry in model_config["layers"]
        if entry["class_name"] != "InputLayer"
        for i, node in enumerate(entry.get("inbound_nodes") or [])
    ]
    while pending:
        waiting = []
        for entry, i, node in pending:
            refs, kwargs = _call_inputs(entry, node)
            if any(tuple(ref[:2]) not in tensors for ref in refs):
                waiting.append((entry, i, node))
                continue
            inputs = [tensors[tuple(ref[:2])][ref[2]] for ref in refs]
            name = entry["config"].get("name", entry.get("name"))
            if entry["class_name"] == "TFOpLambda":
                built[name] = _operator_layer(entry)
            output = built[name](inputs if len(inputs) > 1 else inputs[0], **kwargs)
            tensors[(name, i)] = list(output) if isinstance(output, (list, tuple)) else [output]
        if len(waiting) == len(pending):
            names = sorted({entry["config"].get("name") for entry, _, _ in waiting})
            raise LarqImportError(f"the layers {names} read inputs that no layer produces.")
        pending = waiting


def _refs(value):
    return [value] if value and isinstance(value[0], str) else list(value or [])


def functional(model_config, described):
    """A `keras.Model` replaying a legacy Functional config."""
    built = translate_all(model_config, described)
    tensors = {}
    for entry in model_config["layers"]:
        if entry["class_name"] == "InputLayer":
            tensors[(entry["config"]["name"], 0)] = [_input_tensor(entry)]
    _replay(model_config, built, tensors)
    inputs = [tensors[(r[0], r[1])][r[2]] for r in _refs(model_config["input_layers"])]
    outputs = [tensors[(r[0], r[1])][r[2]] for r in _refs(model_config["output_layers"])]
    return keras.Model(
        inputs=inputs if len(inputs) > 1 else inputs[0],
        outputs=outputs if len(outputs) > 1 else outputs[0],
        name=model_config.get("name"),
    )


def sequential(model_config, described):
    """A `keras.Sequential` of the translated layers of a legacy Sequential config."""
    entries = list(model_config["layers"])
    if entries and entries[0]["class_name"] == "InputLayer":
        first = entries.pop(0)
    elif entries and "batch_input_shape" in entries[0]["config"]:
        first = {"config": {"batch_input_shape": entries[0]["config"].pop("batch_input_shape")}}
    else:
        raise LarqImportError("the Sequential model has no input shape; build it before saving.")
    built = translate_all({"layers": entries}, described)
    layers = [built[e["config"]["name"]] for e in entries]
    return keras.Sequential([_input_tensor(first), *layers], name=model_config.get("name"))


def set_weights(model, described, arrays):
    """Copies every layer's latent weights, checking count and shapes, naming the layer."""
    for name, layer_description in described.items():
        values = [arrays[w["key"]] for w in layer_description["weights"]]
        if not values:
            continue
        layer = model.get_layer(name)
        if layer_description["class_name"] in import_layers.CONVENTIONS:
            values = import_layers.convention_weights(layer, values)
        expected = [tuple(v.shape) for v in layer.weights]
        received = [tuple(np.shape(v)) for v in values]
        if expected != received:
            raise LarqImportError(
                f"layer {name!r}: larq's weights have shapes {received} "
                f"({[w['name'] for w in layer_description['weights']]}), the Keras 3 layer "
                f"expects {expected}."
            )
        layer.set_weights(values)


def check_conventions(model, described, arrays, atol=1e-6):
    """Runs each layer mapped by convention on its probe; raises where it differs from larq's."""
    for name, layer_description in described.items():
        if layer_description["class_name"] not in import_layers.CONVENTIONS:
            continue
        probe = layer_description["probe"]
        x, expected = arrays[probe["x"]], arrays[probe["y"]]
        received = keras.ops.convert_to_numpy(model.get_layer(name)(x))
        if received.shape != expected.shape or not np.allclose(received, expected, atol=atol):
            target = type(model.get_layer(name)).__name__
            raise LarqImportError(
                f"layer {name!r} ({layer_description['class_name']}) does not compute what "
                f"kerasbnn.layers.{target} computes: on a random input their outputs differ. "
                "Rebuild it with kerasbnn layers by hand, or rename the class if it is not "
                "ReActNet's learnable bias."
            )


def build(description, arrays):
    """The Keras 3 model of a description (see `_child.py`), with larq's weights."""
    model_info = description["model"]
    if model_info["class_name"] not in _SUPPORTED_MODELS:
        raise LarqImportError(
            f"the model is a {model_info['class_name']}; the importer reads Functional and "
            "Sequential models (a subclassed model has no layer graph to read)."
        )
    described = {layer["name"]: layer for layer in description["layers"]}
    make = sequential if model_info["class_name"] == "Sequential" else functional
    model = make(model_info["config"], described)
    set_weights(model, described, arrays)
    check_conventions(model, described, arrays)
    return model

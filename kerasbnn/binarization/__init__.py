"""`binarize(model)`: the binary (or k-bit) twin of a float Keras CNN, ready for LCE.

The new model has the float model's topology and its weights as latent weights: every
`Conv2D` becomes a `QuantConv2D` and every `Dense` a `QuantDense` with the binary scheme's
quantizers, except the layers LCE cannot run in binary or that the field keeps float for
accuracy. `binarize(model, dry_run=True)` returns the plan instead: every layer, what happens
to it and why, and the parameters, memory and operations before and after.
"""

import os

import keras

from kerasbnn.binarization import graph
from kerasbnn.binarization.plan import BinarizePlan, LayerPlan, decide
from kerasbnn.binarization.rebuild import Rebuilder
from kerasbnn.models.precision import resolve_precision
from kerasbnn.utils.summary import summary

__all__ = ["binarize", "BinarizePlan", "LayerPlan"]


def _load(path):
    if not os.path.isfile(path):
        raise ValueError(
            f"binarize: {str(path)!r} does not exist; pass a keras.Model or a .keras file."
        )
    try:
        return keras.saving.load_model(path, safe_mode=True)
    except Exception as error:  # any loader failure: the file is not a usable model
        raise ValueError(
            f"binarize: could not load {str(path)!r} as a Keras model ({type(error).__name__}: "
            f"{error}). Pass a model saved with model.save('model.keras')."
        ) from error


def check_model(model):
    """Returns a built Sequential or functional model, or raises a ValueError saying what to do.

    Args:
        model: a `keras.Model`, or the path of a `.keras` file (loaded with `safe_mode=True`).
    """
    if isinstance(model, (str, os.PathLike)):
        model = _load(os.fspath(model))
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"binarize expects a keras.Model or a .keras path, received {type(model).__name__}."
        )
    if not (isinstance(model, keras.Sequential) or type(model).__name__ == "Functional"):
        raise ValueError(
            f"binarize cannot read the layer graph of {model.name!r}: it is a subclassed model "
            f"({type(model).__name__}), whose call() is Python code. Rebuild it as a functional "
            "model (keras.Model(inputs, outputs)) or a keras.Sequential, or replace its Conv2D "
            "and Dense layers by kerasbnn.layers.QuantConv2D / QuantDense by hand."
        )
    if not model.built or not model.inputs:
        raise ValueError(
            f"model {model.name!r} has no input shape: give it a keras.Input (or call it on a "
            "batch) before binarize."
        )
    return model


def _merge(facts, fact):
    if facts is None:
        return fact
    facts.raw |= fact.raw
    facts.head |= fact.head
    facts.nonnegative = facts.nonnegative or fact.nonnegative
    return facts


def plan_layers(model, precision, keep_first=True, keep_last=True, keep=()):
    """`{id(layer): LayerPlan}` for every leaf layer and the plans in graph order."""
    calls = []
    outputs = graph.flatten(model, calls=calls)
    calls = graph.ordered(calls)
    inputs = [f"<input>:{i}" for i in range(len(model.inputs))]
    facts = graph.analyse(calls, outputs, inputs)
    merged, paths = {}, {}
    for call in calls:
        merged[id(call.layer)] = _merge(merged.get(id(call.layer)), facts[id(call)])
        paths.setdefault(id(call.layer), (call.layer, call.path))
    plans = {
        key: decide(layer, path, merged[key], precision, keep_first, keep_last, set(keep))
        for key, (layer, path) in paths.items()
    }
    return plans, [plans[key] for key in paths]


def _nothing_to_convert(model, ordered_plans):
    kept = [p for p in ordered_plans if p.reason and p.action == "kept float"]
    detail = "".join(f"\n  - {p.path} ({p.class_name}): {p.reason}" for p in kept)
    return ValueError(
        f"model {model.name!r} has no convolution or dense layer to binarize"
        + (f"; every candidate is kept float:{detail}" if kept else " (it has none).")
        + "\nbinarize converts Conv2D and Dense layers; pass keep_first=False / "
        "keep_last=False to convert the first or last ones."
    )


def binarize(model, bits=1, quantizer=None, binary="plain", keep_first=True, keep_last=True,
             keep=(), dry_run=False):
    """The binary (`bits=1`) or k-bit twin of a float Keras model, or its plan.

    Every `Conv2D` becomes a `QuantConv2D` and every `Dense` a `QuantDense` with the same
    configuration and the float weights as latent weights. With `bits=1` they get the
    `binary` scheme's quantizers (`"plain"`: ste_sign inputs and weights, latent weights
    clipped to [-1, 1]; see `kerasbnn.models.precision`) and `pad_values=1.0` for "same"
    padding, so that LCE runs each as `LceBconv2d` (a dense layer as a 1x1 binary conv).
    Kept float, each with its reason in the plan:

    - depthwise and separable convolutions (LCE has no binary depthwise kernel), grouped
      convolutions, other convolution types, subclasses of Conv2D / Dense;
    - by default, the layers that read raw pixels (`keep_first`) and those that write the
      model output, the classifier (`keep_last`), as BNNs do for accuracy;
    - layers named in `keep`.

    A binarized layer whose input is non-negative by construction (a ReLU, ReLU6, sigmoid or
    softmax before it, possibly through pooling, padding, flatten, dropout...) would see
    sign(x) = +1 everywhere: binarize inserts a learnable per-channel shift before its sign
    (ReActNet's RSign, eq. 4: sign(x - alpha)), initialised to -1e-4 so that the ReLU's zeros
    map to -1, and the plan lists each such rewrite. BatchNormalization stays after each conv
    (LCE folds it into the binary convolution).

    `bits=2, 4, 8` (or `(w_bits, a_bits)`) makes a k-bit twin with `quantizer` (`"dorefa"`
    when None, or `"hwgq"`, `"lsq"`), e.g. an 8-bit teacher for distillation.

    Args:
        model: a built Sequential or functional `keras.Model` (nested models included), or
            the path of a `.keras` file.
        bits: 1 (binary), k in 2..8, or `(w_bits, a_bits)`.
        quantizer: family of the k-bit quantizers (None: `"dorefa"`).
        binary: binary scheme, one of `kerasbnn.models.precision.BINARY_SCHEMES`.
        keep_first: keep the layers on raw pixels float.
        keep_last: keep the layers that write the model outputs float.
        keep: names of further layers to keep float.
        dry_run: return the `BinarizePlan` instead of the model.

    Returns:
        The new `keras.Model` (named `<name>_<w1a1>`), or with `dry_run` a `BinarizePlan`
        (`print(plan)`).

    Raises:
        ValueError: a subclassed or unbuilt model, a path that is not a Keras model, an
            unknown scheme or quantizer, bad bits, or no layer to convert.

    Example:
    ```python
    print(kerasbnn.binarize(model, dry_run=True))
    student = kerasbnn.binarize(model)
    teacher8 = kerasbnn.binarize(model, bits=8)
    ```
    """
    model, precision = _checked_arguments(model, bits, quantizer, binary)
    plans, ordered_plans = _convertible_plans(model, precision, keep_first, keep_last, keep)
    new = _rebuilt(model, plans, precision)
    return _plan_of(model, new, precision, ordered_plans) if dry_run else new


def _checked_arguments(model, bits, quantizer, binary):
    """`(model, precision)` of `binarize`'s arguments, or a ValueError saying what to pass."""
    model = check_model(model)
    precision = resolve_precision(bits, quantizer or "dorefa", binary)
    if precision.is_float:
        raise ValueError("bits=32 is the float model itself; pass bits=1 (binary) or 2, 4, 8.")
    return model, precision


def _convertible_plans(model, precision, keep_first, keep_last, keep):
    """`plan_layers`, or a ValueError if the plan converts no layer."""
    plans, ordered_plans = plan_layers(model, precision, keep_first, keep_last, keep)
    if not any(p.converted for p in ordered_plans):
        raise _nothing_to_convert(model, ordered_plans)
    return plans, ordered_plans


def _rebuilt(model, plans, precision):
    """The twin of `model` that `plans` describe, with the float weights as latent weights."""
    rebuilder = Rebuilder(plans, precision)
    new = rebuilder.rebuild(model, name=f"{model.name}_{precision.tag}")
    rebuilder.copy_weights()
    return new


def _plan_of(model, new, precision, ordered_plans):
    """The `BinarizePlan` that `binarize(..., dry_run=True)` returns."""
    return BinarizePlan(
        model_name=model.name,
        tag=precision.tag,
        layers=ordered_plans,
        before=summary(model, print_fn=None),
        after=summary(new, print_fn=None),
    )

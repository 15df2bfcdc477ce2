"""Layer-by-layer verification of an LCE flatbuffer against the Keras model it came from.

A binary network decides a sign at every binary layer. Two correct implementations of the
same network (Keras with TensorFlow's kernels, LCE with its fused ones) add floats in another
order, so a value that is zero up to rounding can come out +1e-6 in one and -1e-6 in the
other. One such flipped bit early in a deep random network changes thousands of values
downstream (LCE.md section 4: a binary ResNet-18 with one flip differed by 19 at the
logits). Comparing outputs alone then fails at random on a correct conversion, and a
loose tolerance would let real errors through.

So the check is made layer by layer:

1. The flatbuffer is run with the input of every `LceBconv2d` op exposed as an extra output
   (the ops are not changed: only the subgraph's output list grows), which gives LCE's
   binarized input of every binary layer, bit for bit.
2. Keras is run twice on the same sample. Once as it is ("free"), which gives the
   max |Keras - LCE| and the top-1 agreement a user sees. Once "forced": every binary
   layer binarizes nothing itself but takes LCE's bits for its input, and records the float
   value Keras computed there. In the forced run the two implementations take the same
   decisions everywhere, so what remains is float rounding only.
3. It passes when (a) every bit where LCE and the forced Keras run disagree sits at a value
   that is zero up to rounding, |x| <= `flip_rtol` times the 99th percentile of |x| over
   that layer's input for that example, (b) there are few of them, at most one per example
   or 0.1% of the layer's bits (`allowed_flips`: rounding flips are rare, a sign
   convention applied to every exact zero is not), and (c) the forced outputs match LCE's
   within `atol + rtol * max|y|` per example. Otherwise it fails and names the first binary
   layer whose input differs: the cause lies between the previous binary layer (or the
   input) and that one (padding, binarizer, batch normalization, sign convention); outputs
   that differ with the same bits everywhere point at the float part after the last binary
   layer.

Keras' bits are the ones its quantizers produce; the distances are measured to 0, so every
binary layer's quantizer must switch sign at 0 (all of kerasbnn's binarizers do; a
thresholded one is refused with a clear error).
"""

import dataclasses

import flatbuffers
import numpy as np
from keras import ops
from larq_compute_engine.mlir.python import tflite_schema

__all__ = ["Verification", "verify"]

ATOL = 1e-3
RTOL = 1e-5
FLIP_RTOL = 1e-4
MAX_FLIP_FRACTION = 1e-3


@dataclasses.dataclass
class Verification:
    """What `verify` measured.

    Attributes:
        max_abs_diff: max |Keras - LCE| over the sample, Keras running freely.
        mismatch_fraction: fraction of output values outside `atol + rtol * max|y|`.
        top1_agreement: fraction of examples whose arg-max agrees (None unless the output is
            (N, classes) with at least 2 classes).
        forced_max_abs_diff: max |Keras - LCE| with LCE's bits forced into every binary layer.
        flipped_bits: `{layer: bits}` where forced Keras and LCE disagree (rounding flips
            when the verification passed), over all examples.
        first_flip: `(layer, bits)` of the first binary layer, in the order of
            `binary_layers` (the model's definition order), with a flipped bit, or None.
        max_flip_margin: the largest |x| / scale at a flipped bit (0.0 without flips), the
            scale being the 99th percentile of |x| over the layer's input.
        failure: why the verification failed, naming the layer; None when it passed.
    """

    max_abs_diff: float
    mismatch_fraction: float
    top1_agreement: float
    forced_max_abs_diff: float
    flipped_bits: dict
    first_flip: tuple
    max_flip_margin: float
    failure: str = None


def expose_bconv_inputs(flatbuffer):
    """The flatbuffer with the input of every `LceBconv2d` op added to the subgraph outputs.

    Returns:
        `(flatbuffer bytes, number of LceBconv2d ops)`; the exposed tensors follow the
        model's own outputs, in op order.
    """
    model = tflite_schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    subgraph = model.subgraphs[0]
    codes = model.operatorCodes
    exposed = [
        op.inputs[0]
        for op in subgraph.operators
        if codes[op.opcodeIndex].customCode == b"LceBconv2d"
    ]
    subgraph.outputs = [*subgraph.outputs, *exposed]
    builder = flatbuffers.Builder(len(flatbuffer) + 1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output()), len(exposed)


def unpack_bits(packed, channels):
    """LCE's bitpacked tensor (int32, 32 channels a word, bit 1 = -1) as +-1 floats."""
    words = np.ascontiguousarray(packed).astype(np.int32).view(np.uint32)
    bits = (words[..., None] >> np.arange(32, dtype=np.uint32)) & 1
    bits = bits.reshape(*words.shape[:-1], -1)[..., :channels]
    return np.where(bits == 1, -1.0, 1.0).astype("float32")


class _Tap:
    """Stands in for a layer's input quantizer: records its input and the decisions the
    quantizer itself takes on it, and optionally forces its output to given bits."""

    def __init__(self, quantizer, forced=None):
        self.quantizer = quantizer
        self.forced = forced
        self.seen = None
        self.decided = None

    def __getattr__(self, name):  # precision, alias...: the layer still sees its quantizer
        return getattr(self.__dict__["quantizer"], name)

    def __call__(self, x, **params):
        self.seen = ops.convert_to_numpy(x)
        output = self.quantizer(x, **params)
        self.decided = np.where(ops.convert_to_numpy(output) >= 0, 1.0, -1.0).astype("float32")
        if self.forced is None:
            return output
        return ops.convert_to_tensor(self.forced.reshape(self.seen.shape))


def _run_keras(model, layers, x, forced=None):
    """`model(x)` with every binary layer's input and decisions recorded (bits forced if given).

    Returns:
        `(outputs, inputs, decisions)`: the model's output, and per binary layer the float
        value its binarizer received and the +-1 its quantizer made of it.
    """
    taps = [_Tap(layer.input_quantizer, None if forced is None else forced[i])
            for i, layer in enumerate(layers)]
    try:
        for layer, tap in zip(layers, taps):
            layer.input_quantizer = tap
        y = model(x, training=False)
    finally:
        for layer, tap in zip(layers, taps):
            layer.input_quantizer = tap.quantizer
    if isinstance(y, (list, tuple, dict)):
        raise ValueError("Verification supports single-output models; pass verify=False.")
    for layer, tap in zip(layers, taps):
        if tap.seen is None:
            raise ValueError(
                f"Binary layer {layer.name!r} was not called by the model's forward pass; "
                "layer-by-layer verification needs every binary layer called once. Pass "
                "verify=False to convert without it."
            )
        _check_boundary(layer, tap.seen, tap.decided)
    return (ops.convert_to_numpy(y).astype("float32"), [t.seen for t in taps],
            [t.decided for t in taps])


def _check_boundary(layer, x, decided):
    """The verification measures distances to 0: a binarizer must switch sign there.

    Where x == 0 either sign is allowed (`where(x >= 0)` and `where(x > 0)` alike).
    """
    off = (decided != np.where(x >= 0, 1.0, -1.0)) & (x != 0)
    if off.any():
        raise ValueError(
            f"The input quantizer of layer {layer.name!r} does not switch sign at 0 (it maps "
            f"{int(off.sum())} nonzero values against their sign, e.g. {float(x[off][0]):.3g}); "
            "layer-by-layer verification supports binarizers whose boundary is 0, as all of "
            "kerasbnn's. Subtract the threshold in a layer before the binarizer (as ReActNet's "
            "learnable bias does), or pass verify=False."
        )


def _bits_differ(packed, decided):
    return np.mean(unpack_bits(packed, decided.shape[-1]).reshape(decided.shape) != decided)


def _same_shape(packed, decided):
    return (decided.ndim == 4 and decided.shape[:3] == packed.shape[:3]
            and packed.shape[3] == -(-decided.shape[3] // 32))


def _match_layers(layers, keras_bits, lce_packed):
    """Which LCE bconv op reads which binary layer's input.

    LCE keeps the graph's order, so op i is layer i when every shape agrees and each pair
    differs in under a quarter of its bits (a cascade of rounding flips stays far below the
    half of unrelated tensors). Otherwise each op takes the same-shaped layer with the fewest
    differing bits.

    Returns:
        A list: for each layer, the index of its bconv op (None when no match exists).
    """
    if len(lce_packed) == len(layers) and all(
        _same_shape(p, d) and _bits_differ(p, d) < 0.25 for p, d in zip(lce_packed, keras_bits)
    ):
        return list(range(len(layers)))
    order = [None] * len(layers)
    for op_index, packed in enumerate(lce_packed):
        candidates = [(_bits_differ(packed, d), i) for i, d in enumerate(keras_bits)
                      if order[i] is None and _same_shape(packed, d)]
        if not candidates:
            return None
        order[min(candidates)[1]] = op_index
    return order


def _output_check(expected, actual, atol, rtol):
    scale = np.max(np.abs(expected.reshape(len(expected), -1)), axis=1)
    bound = (atol + rtol * scale).reshape(-1, *([1] * (expected.ndim - 1)))
    diff = np.abs(actual - expected)
    return float(diff.max()), float(np.mean(diff > bound)), bool(np.all(diff <= bound))


def _flips(layers, forced_bits, forced_inputs, decisions):
    """Per layer: flipped bits, and the largest margin |x| / scale among them.

    The scale is the 99th percentile of |x| over the layer's input, per example: rounding
    grows with the values summed into x, and a single outlier must not widen the bound for
    the whole layer.
    """
    flipped, margins = {}, {}
    for layer, bits, x, decided in zip(layers, forced_bits, forced_inputs, decisions):
        differ = bits.reshape(x.shape) != decided
        if not differ.any():
            continue
        scale = np.percentile(np.abs(x.reshape(len(x), -1)), 99, axis=1).reshape(-1, 1, 1, 1)
        margin = np.abs(x) / np.maximum(scale, np.finfo("float32").tiny)
        flipped[layer.name] = int(differ.sum())
        margins[layer.name] = float(margin[differ].max())
    return flipped, margins


def verify(model, flatbuffer, sample, binary_layers, *, atol=ATOL, rtol=RTOL,
           flip_rtol=FLIP_RTOL):
    """Compares `model` with its LCE flatbuffer on `sample`, layer by layer (module docstring).

    Args:
        model: the Keras model that was converted (one input, one output).
        flatbuffer: its converted bytes, in which every binary layer is one `LceBconv2d`.
        sample: float32 inputs, shape (N, H, W, C).
        binary_layers: the model's binary layers, in the model's order.
        atol, rtol: the output tolerance, atol + rtol * max|y| per example.
        flip_rtol: a flipped bit is a rounding flip when |x| <= flip_rtol * scale there, the
            scale being the 99th percentile of |x| over that layer's input (per example).

    Returns:
        A `Verification`; its `failure` is None when the conversion is verified.

    Raises:
        ValueError: a binary layer's quantizer does not switch sign at 0, or a binary layer
            is not called by the forward pass (the message says to pass verify=False).
    """
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    exposed, count = expose_bconv_inputs(flatbuffer)
    outputs = Interpreter(exposed, num_threads=1, use_indirect_bgemm=True).predict(sample)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    expected, _, keras_bits = _run_keras(model, binary_layers, sample)
    actual = np.asarray(outputs[0], dtype="float32").reshape(expected.shape)
    max_diff, mismatch, outputs_ok = _output_check(expected, actual, atol, rtol)
    top1 = None
    if expected.ndim == 2 and expected.shape[1] > 1:
        top1 = float(np.mean(expected.argmax(1) == actual.argmax(1)))
    result = Verification(max_diff, mismatch, top1, max_diff, {}, None, 0.0)
    if not binary_layers:
        if not outputs_ok:
            result.failure = _float_failure(max_diff, atol, rtol, binarized=False)
        return result
    packed = [np.asarray(o) for o in outputs[1:]]
    order = _match_layers(binary_layers, keras_bits, packed) if count == len(binary_layers) else None
    if order is None:
        result.failure = (
            f"the {count} LceBconv2d ops could not be matched by shape to the model's "
            f"{len(binary_layers)} binary layers, so they were not verified; pass verify=False "
            "to write the file unverified."
        )
        return result
    forced = [unpack_bits(packed[order[i]], d.shape[-1]) for i, d in enumerate(keras_bits)]
    forced_y, forced_inputs, decisions = _run_keras(model, binary_layers, sample, forced)
    result.forced_max_abs_diff, _, outputs_ok = _output_check(forced_y, actual, atol, rtol)
    result.flipped_bits, margins = _flips(binary_layers, forced, forced_inputs, decisions)
    if result.flipped_bits:
        first = next(name for name in (layer.name for layer in binary_layers)
                     if name in result.flipped_bits)
        result.first_flip = (first, result.flipped_bits[first])
        result.max_flip_margin = max(margins.values())
    sizes = {layer.name: d.size for layer, d in zip(binary_layers, keras_bits)}
    result.failure = _failure(binary_layers, margins, sizes, len(sample), flip_rtol, outputs_ok,
                              result, atol, rtol)
    return result


def allowed_flips(size, examples):
    """How many rounding flips a layer may show: one per example, or 0.1% of its bits."""
    return max(examples, int(np.ceil(MAX_FLIP_FRACTION * size)))


def _float_failure(max_diff, atol, rtol, *, binarized):
    where = "with LCE's binarized inputs forced into every binary layer, " if binarized else ""
    return (
        f"{where}the outputs differ by up to {max_diff:.3g} (tolerance {atol:g} + {rtol:g} "
        "* max|y|): the float part after the last binary layer (or that layer's padding) "
        "computes something else in the converted graph."
    )


def _failure(layers, margins, sizes, examples, flip_rtol, outputs_ok, result, atol, rtol):
    where = ("the difference lies between the previous binary layer (or the input) and this "
             "one: padding, binarizer, batch normalization or sign convention")
    for layer in layers:
        margin, flips = margins.get(layer.name), result.flipped_bits.get(layer.name, 0)
        if margin is not None and margin > flip_rtol:
            return (
                f"layer {layer.name!r}: {flips} binarized input bits differ from Keras, some "
                f"where Keras' value is far from zero (|x| up to {margin:.2g} of the layer's "
                f"scale, rounding allows {flip_rtol:g}); {where}. A conversion error."
            )
        if flips > allowed_flips(sizes[layer.name], examples):
            return (
                f"layer {layer.name!r}: {flips} of {sizes[layer.name]} binarized input bits "
                f"differ from Keras, all at values zero up to rounding but more than rounding "
                f"explains (at most {allowed_flips(sizes[layer.name], examples)}): the "
                "converted graph binarizes (near-)zero values with another sign convention; "
                f"{where}. A conversion error."
            )
    if not outputs_ok:
        return _float_failure(result.forced_max_abs_diff, atol, rtol, binarized=True)
    return None

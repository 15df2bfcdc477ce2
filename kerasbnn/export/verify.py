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
   that is zero up to rounding, |x| <= `flip_rtol` * max|x| over that layer's input for
   that example, and (b) the forced outputs match LCE's within `atol + rtol * max|y|`
   per example. A flip at a value far from zero is a real conversion error (padding,
   binarizer or sign convention) and names the layer; outputs that differ with the same
   bits everywhere name the float part.
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


@dataclasses.dataclass
class Verification:
    """What `verify` measured.

    Attributes:
        max_abs_diff: max |Keras - LCE| over the sample, Keras running freely.
        mismatch_fraction: fraction of output values outside `atol + rtol * max|y|`.
        top1_agreement: fraction of examples whose arg-max agrees (None for 1 output value).
        forced_max_abs_diff: max |Keras - LCE| with LCE's bits forced into every binary layer.
        flipped_bits: `{layer: bits}` where forced Keras and LCE disagree (rounding flips
            when the verification passed), over all examples.
        first_flip: `(layer, bits)` of the first binary layer, in the model's order, with a
            flipped bit, or None.
        max_flip_margin: the largest |x| / max|x| at a flipped bit (0.0 without flips).
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
    """Stands in for a layer's input quantizer: records its input, optionally forces its output."""

    def __init__(self, quantizer, forced=None):
        self.quantizer = quantizer
        self.forced = forced
        self.seen = None

    def __getattr__(self, name):  # precision, alias...: the layer still sees its quantizer
        return getattr(self.__dict__["quantizer"], name)

    def __call__(self, x, **params):
        self.seen = ops.convert_to_numpy(x)
        if self.forced is None:
            return self.quantizer(x, **params)
        return ops.convert_to_tensor(self.forced.reshape(self.seen.shape))


def _run_keras(model, layers, x, forced=None):
    """`model(x)` with every binary layer's input recorded (and its bits forced if given)."""
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
    return ops.convert_to_numpy(y).astype("float32"), [tap.seen for tap in taps]


def _match_layers(layers, keras_inputs, lce_packed):
    """Which LCE bconv op reads which binary layer's input: same shape, fewest differing bits.

    Returns:
        A list: for each layer, the index of its bconv op.
    """
    order = [None] * len(layers)
    for op_index, packed in enumerate(lce_packed):
        best = None
        for i, x in enumerate(keras_inputs):
            if order[i] is not None or x.ndim != 4:
                continue
            if x.shape[:3] != packed.shape[:3] or packed.shape[3] != -(-x.shape[3] // 32):
                continue
            differ = np.mean(unpack_bits(packed, x.shape[3]) != np.where(x >= 0, 1.0, -1.0))
            if best is None or differ < best[0]:
                best = (differ, i)
        if best is None:
            return None
        order[best[1]] = op_index
    return order


def _output_check(expected, actual, atol, rtol):
    scale = np.max(np.abs(expected.reshape(len(expected), -1)), axis=1)
    bound = (atol + rtol * scale).reshape(-1, *([1] * (expected.ndim - 1)))
    diff = np.abs(actual - expected)
    return float(diff.max()), float(np.mean(diff > bound)), bool(np.all(diff <= bound))


def _flips(layers, forced_bits, forced_inputs, flip_rtol):
    """Per layer: flipped bits, the largest margin |x| / max|x| among them."""
    flipped, margins = {}, {}
    for layer, bits, x in zip(layers, forced_bits, forced_inputs):
        differ = bits.reshape(x.shape) != np.where(x >= 0, 1.0, -1.0)
        if not differ.any():
            continue
        scale = np.max(np.abs(x.reshape(len(x), -1)), axis=1).reshape(-1, 1, 1, 1)
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
        flip_rtol: a flipped bit is a rounding flip when |x| <= flip_rtol * max|x| there.

    Returns:
        A `Verification`; its `failure` is None when the conversion is verified.
    """
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    exposed, count = expose_bconv_inputs(flatbuffer)
    interpreter = Interpreter(exposed, num_threads=1, use_indirect_bgemm=True)
    outputs = interpreter.predict(sample)
    outputs = outputs if isinstance(outputs, list) else [outputs]
    expected, keras_inputs = _run_keras(model, binary_layers, sample)
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
    order = _match_layers(binary_layers, keras_inputs, [np.asarray(o) for o in outputs[1:]])
    if count != len(binary_layers) or order is None:
        result.failure = (
            "the LceBconv2d ops could not be matched to the model's binary layers by shape "
            f"({count} ops, {len(binary_layers)} layers); compare outputs with verify=False."
        )
        return result
    forced = [unpack_bits(np.asarray(outputs[1 + order[i]]), x.shape[-1])
              for i, x in enumerate(keras_inputs)]
    forced_y, forced_inputs = _run_keras(model, binary_layers, sample, forced)
    result.forced_max_abs_diff, _, outputs_ok = _output_check(forced_y, actual, atol, rtol)
    result.flipped_bits, margins = _flips(binary_layers, forced, forced_inputs, flip_rtol)
    if result.flipped_bits:
        first = next(name for name in (layer.name for layer in binary_layers)
                     if name in result.flipped_bits)
        result.first_flip = (first, result.flipped_bits[first])
        result.max_flip_margin = max(margins.values())
    result.failure = _failure(binary_layers, margins, flip_rtol, outputs_ok, result, atol, rtol)
    return result


def _float_failure(max_diff, atol, rtol, *, binarized):
    where = "with LCE's binarized inputs forced into every binary layer, " if binarized else ""
    return (
        f"{where}the outputs differ by up to {max_diff:.3g} (tolerance {atol:g} + {rtol:g} "
        "* max|y|): the float part of the converted graph computes something else."
    )


def _failure(layers, margins, flip_rtol, outputs_ok, result, atol, rtol):
    for layer in layers:
        margin = margins.get(layer.name)
        if margin is not None and margin > flip_rtol:
            return (
                f"layer {layer.name!r}: {result.flipped_bits[layer.name]} binarized input bits "
                f"differ from Keras, some where Keras' value is far from zero (|x| up to "
                f"{margin:.2g} of the layer's range, rounding allows {flip_rtol:g}): the "
                "converted graph computes this layer's input differently, a conversion error."
            )
    if not outputs_ok:
        return _float_failure(result.forced_max_abs_diff, atol, rtol, binarized=True)
    return None

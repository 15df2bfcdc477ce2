"""QuantConv2D, QuantDense and QuantDepthwiseConv2D equal larq 0.14's layers for the same weights.

Outputs and the gradients w.r.t. input and kernel are compared; larq runs once for all
cases in a subprocess (tests/larq_oracle.py).
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kerasbnn.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D

pytestmark = pytest.mark.larq

_spec = importlib.util.spec_from_file_location(
    "larq_oracle", Path(__file__).resolve().parents[1] / "larq_oracle.py"
)
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)

BINARY = "input_quantizer='ste_sign', kernel_quantizer='ste_sign'"
# name: (larq class, kerasbnn class, constructor arguments as source, input shape)
CASES = {
    "conv_same_one": (
        "QuantConv2D",
        QuantConv2D,
        f"4, 3, padding='same', pad_values=1.0, {BINARY}",
        (2, 6, 6, 3),
    ),
    "conv_same_one_stride2": (
        "QuantConv2D",
        QuantConv2D,
        f"4, 3, strides=2, padding='same', pad_values=1.0, {BINARY}",
        (2, 6, 6, 3),
    ),
    "conv_same_zero": ("QuantConv2D", QuantConv2D, f"4, 3, padding='same', {BINARY}", (2, 5, 5, 3)),
    "conv_valid_dilated": (
        "QuantConv2D",
        QuantConv2D,
        f"4, 3, dilation_rate=2, {BINARY}",
        (2, 7, 7, 3),
    ),
    "conv_bireal": (
        "QuantConv2D",
        QuantConv2D,
        "4, 3, padding='same', pad_values=1.0, input_quantizer='approx_sign', "
        "kernel_quantizer='magnitude_aware_sign'",
        (2, 5, 5, 3),
    ),
    "dense": ("QuantDense", QuantDense, f"5, {BINARY}", (4, 7)),
    "dense_float_input": ("QuantDense", QuantDense, "5, kernel_quantizer='ste_sign'", (4, 7)),
    "depthwise": (
        "QuantDepthwiseConv2D",
        QuantDepthwiseConv2D,
        "3, padding='same', pad_values=1.0, depth_multiplier=2, input_quantizer='ste_sign', "
        "depthwise_quantizer='ste_sign'",
        (2, 5, 5, 3),
    ),
}

SNIPPET = """
for name, (cls, args) in CASES.items():
    layer = eval(f"larq.layers.{cls}({args})")
    x = tf.constant(inputs[name + "/x"])
    layer.build(x.shape)
    layer.set_weights([inputs[name + "/kernel"], inputs[name + "/bias"]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * inputs[name + "/dy"])
    outputs[name + "/y"] = y.numpy()
    outputs[name + "/dx"] = tape.gradient(loss, x).numpy()
    kernel = layer.depthwise_kernel if cls == "QuantDepthwiseConv2D" else layer.kernel
    outputs[name + "/dkernel"] = tape.gradient(loss, kernel).numpy()
"""


def _kernel_shape(cls, shape):
    if cls is QuantDense:
        return (shape[-1], 5), 5
    if cls is QuantConv2D:
        return (3, 3, shape[-1], 4), 4
    return (3, 3, shape[-1], 2), 2 * shape[-1]


@pytest.fixture(scope="module")
def cases(tmp_path_factory):
    if not oracle.available():
        pytest.skip("larq and tf-keras are not installed (pip install -e '.[larq]')")
    rng = np.random.default_rng(7)
    data = {}
    for name, (_, cls, _, shape) in CASES.items():
        kernel_shape, out_channels = _kernel_shape(cls, shape)
        data[name + "/x"] = rng.normal(size=shape).astype("float32")
        data[name + "/kernel"] = rng.uniform(-1.3, 1.3, size=kernel_shape).astype("float32")
        data[name + "/bias"] = rng.normal(size=out_channels).astype("float32")
    for name, (_, cls, args, _) in CASES.items():
        layer = eval(f"cls({args})", {"cls": cls})
        layer.build(data[name + "/x"].shape)
        out_shape = layer.compute_output_shape(data[name + "/x"].shape)
        data[name + "/dy"] = rng.normal(size=out_shape).astype("float32")
    snippet = f"CASES = {({n: (c[0], c[2]) for n, c in CASES.items()})!r}\n" + SNIPPET
    reference = oracle.run(snippet, data, tmp_path_factory.mktemp("larq"))
    return data, reference


@pytest.mark.parametrize("name", sorted(CASES))
def test_outputs_and_gradients_match_larq(cases, name):
    data, reference = cases
    _, cls, args, _ = CASES[name]
    layer = eval(f"cls({args})", {"cls": cls})
    x = tf.constant(data[name + "/x"])
    layer.build(x.shape)
    layer.set_weights([data[name + "/kernel"], data[name + "/bias"]])
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(x)
        y = layer(x)
        loss = tf.reduce_sum(y * data[name + "/dy"])
    np.testing.assert_allclose(y, reference[name + "/y"], rtol=1e-5, atol=1e-4)
    np.testing.assert_allclose(
        tape.gradient(loss, x), reference[name + "/dx"], rtol=1e-5, atol=1e-4
    )
    np.testing.assert_allclose(
        tape.gradient(loss, layer.kernel), reference[name + "/dkernel"], rtol=1e-5, atol=1e-4
    )

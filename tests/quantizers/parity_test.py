"""Forward values and pseudo-gradients equal larq 0.14's on fixed random inputs.

larq runs once per module in a subprocess (tests/larq_oracle.py) that evaluates every case.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from kerasbnn import quantizers

pytestmark = pytest.mark.larq

_spec = importlib.util.spec_from_file_location(
    "larq_oracle", Path(__file__).resolve().parents[1] / "larq_oracle.py"
)
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)

# name: (larq constructor, kerasbnn quantizer)
CASES = {
    "ste_sign": ("lq.quantizers.SteSign()", quantizers.SteSign()),
    "ste_sign_clip_none": ("lq.quantizers.SteSign(clip_value=None)", quantizers.SteSign(None)),
    "ste_sign_clip_half": ("lq.quantizers.SteSign(clip_value=0.5)", quantizers.SteSign(0.5)),
    "approx_sign": ("lq.quantizers.ApproxSign()", quantizers.ApproxSign()),
    "swish_sign": ("lq.quantizers.SwishSign()", quantizers.SwishSign()),
    "swish_sign_beta2": ("lq.quantizers.SwishSign(beta=2.0)", quantizers.SwishSign(beta=2.0)),
    "magnitude_aware_sign": ("lq.quantizers.MagnitudeAwareSign()", quantizers.MagnitudeAwareSign()),
    "ste_heaviside": ("lq.quantizers.SteHeaviside()", quantizers.SteHeaviside()),
    "ste_tern": ("lq.quantizers.SteTern()", quantizers.SteTern()),
    "ste_tern_twn": (
        "lq.quantizers.SteTern(ternary_weight_networks=True)",
        quantizers.SteTern(ternary_weight_networks=True),
    ),
    "ste_tern_custom": (
        "lq.quantizers.SteTern(threshold_value=0.3, clip_value=None)",
        quantizers.SteTern(threshold_value=0.3, clip_value=None),
    ),
    "no_op": ("lq.quantizers.NoOp(precision=2)", quantizers.NoOp(precision=2)),
    **{
        f"dorefa_{mode}_{k}": (
            f"lq.quantizers.DoReFa(k_bit={k}, mode={mode!r})",
            quantizers.DoReFa(k, mode),
        )
        for mode in ("activations", "weights")
        for k in (1, 2, 3, 4)
    },
}
# Identical on purpose except for 1-bit weights, where kerasbnn follows the DoReFa paper
# (alpha * sign(w), identity gradient; MAD eq. 4): compared separately below.
DIFFERENT_ON_PURPOSE = {"dorefa_weights_1"}


def _inputs():
    rng = np.random.default_rng(20240601)
    x = (1.5 * rng.standard_normal((3, 3, 4, 5))).astype("float32")
    # Exact ties: sign(0), the ste_tern threshold, the clip edges and DoReFa's grid.
    x.flat[:8] = [0.0, 1.0, -1.0, 0.05, -0.05, 0.5, -0.5, 0.3]
    dy = rng.uniform(0.5, 1.5, size=x.shape).astype("float32")
    return x, dy


@pytest.fixture(scope="module")
def larq_results(tmp_path_factory):
    if not oracle.available():
        pytest.skip("larq is not installed (pip install -e '.[larq]').")
    x, dy = _inputs()
    specs = {name: larq_expr for name, (larq_expr, _) in CASES.items()}
    snippet = f"""
lq = larq
x = tf.constant(inputs["x"])
for name, expr in {specs!r}.items():
    quantizer = eval(expr)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x)
        loss = tf.reduce_sum(y * inputs["dy"])
    outputs[name + "/y"] = y.numpy()
    outputs[name + "/grad"] = tape.gradient(loss, x).numpy()
"""
    return oracle.run(snippet, {"x": x, "dy": dy}, tmp_path_factory.mktemp("larq"))


def _ours(quantizer):
    x, dy = _inputs()
    x = tf.constant(x)
    with tf.GradientTape() as tape:
        tape.watch(x)
        y = quantizer(x)
        loss = tf.reduce_sum(y * dy)
    return y.numpy(), tape.gradient(loss, x).numpy()


def test_matches_larq(larq_results):
    # One test for all cases (each test pays for a Keras session reset); failures are listed.
    mismatches = []
    for name in sorted(set(CASES) - DIFFERENT_ON_PURPOSE):
        y, grad = _ours(CASES[name][1])
        for what, ours in (("y", y), ("grad", grad)):
            error = np.abs(ours - larq_results[f"{name}/{what}"]).max()
            if not error <= 1e-6:
                mismatches.append(f"{name} {what}: max abs diff {error:.3g}")
    assert not mismatches, "differs from larq 0.14: " + "; ".join(mismatches)


def test_dorefa_one_bit_weights_is_the_scaled_paper_form(larq_results):
    """larq: sign(w) with gradient through tanh; kerasbnn: mean|w| sign(w), identity gradient."""
    x, dy = _inputs()
    y, grad = _ours(quantizers.DoReFa(1, "weights"))
    larq_y = larq_results["dorefa_weights_1/y"]
    nonzero = x != 0
    np.testing.assert_array_equal(np.sign(y[nonzero]), larq_y[nonzero])
    np.testing.assert_allclose(np.abs(y), np.abs(x).mean(), rtol=1e-6)
    np.testing.assert_allclose(grad, dy, rtol=0, atol=1e-6)
    assert not np.allclose(grad, larq_results["dorefa_weights_1/grad"], atol=1e-3)

"""Quantizers resolve from aliases/configs/instances and survive JSON and .keras round trips."""

import json

import keras
import numpy as np
import pytest

from kerasbnn import layers, quantizers
from kerasbnn.quantizers.base import ALIASES

AGREED_ALIASES = {
    "ste_sign": quantizers.SteSign,
    "approx_sign": quantizers.ApproxSign,
    "swish_sign": quantizers.SwishSign,
    "magnitude_aware_sign": quantizers.MagnitudeAwareSign,
    "ste_heaviside": quantizers.SteHeaviside,
    "ste_tern": quantizers.SteTern,
    "dorefa": quantizers.DoReFa,
    "dorefa_quantizer": quantizers.DoReFa,  # larq's name
    "hwgq": quantizers.HWGQ,
    "lsq": quantizers.LSQ,
    "no_op": quantizers.NoOp,
}

# (quantizer, role in QuantConv2D)
EXAMPLES = [
    (quantizers.SteSign(), "both"),
    (quantizers.SteSign(clip_value=None), "input"),
    (quantizers.ApproxSign(), "input"),
    (quantizers.SwishSign(beta=2.0), "input"),
    (quantizers.MagnitudeAwareSign(), "kernel"),
    (quantizers.SteHeaviside(clip_value=0.5), "input"),
    (quantizers.SteTern(threshold_value=0.1), "kernel"),
    (quantizers.SteTern(ternary_weight_networks=True, clip_value=None), "kernel"),
    (quantizers.DoReFa(3, "activations"), "input"),
    (quantizers.DoReFa(2, "weights"), "kernel"),
    (quantizers.DoReFa(1, "weights"), "kernel"),
    (quantizers.HWGQ(4, "activations"), "input"),
    (quantizers.HWGQ(6, "weights"), "kernel"),
    (quantizers.LSQ(2, "activations"), "input"),
    (quantizers.LSQ(3, "weights", initial_step=0.05), "kernel"),
    (quantizers.NoOp(precision=8), "input"),
]


def test_every_agreed_alias_resolves():
    for alias, cls in AGREED_ALIASES.items():
        quantizer = quantizers.get(alias)
        assert type(quantizer) is cls, alias
        assert quantizers.get({"class_name": alias, "config": {}}) == quantizer
    assert set(AGREED_ALIASES) <= set(ALIASES)


def test_get_accepts_instance_config_and_none():
    for quantizer, _ in EXAMPLES:
        assert quantizers.get(quantizer) is quantizer
        assert quantizers.get(quantizers.serialize(quantizer)) == quantizer
        by_alias = {"class_name": quantizer.alias, "config": quantizer.get_config()}
        assert quantizers.get(by_alias) == quantizer
    assert quantizers.get(None) is None and quantizers.serialize(None) is None


def test_json_round_trip():
    for quantizer, _ in EXAMPLES:
        config = quantizers.serialize(quantizer)
        assert config["registered_name"] == f"kerasbnn>{type(quantizer).__name__}"
        restored = quantizers.deserialize(json.loads(json.dumps(config)))
        assert restored == quantizer and restored is not quantizer
        assert restored.precision == quantizer.precision
        assert type(quantizer).from_config(quantizer.get_config()) == quantizer


def test_unknown_alias_lists_valid_names():
    with pytest.raises(ValueError, match="Unknown quantizer 'ste_sing'") as info:
        quantizers.get("ste_sing")
    for alias in AGREED_ALIASES:
        assert alias in str(info.value)


def test_uninterpretable_identifier():
    with pytest.raises(ValueError, match="Could not interpret quantizer identifier 3"):
        quantizers.get(3)


def _conv(quantizer, role, index):
    kwargs = {}
    if role in ("input", "both"):
        kwargs["input_quantizer"] = quantizer
    if role in ("kernel", "both"):
        kwargs["kernel_quantizer"] = quantizer
    return layers.QuantConv2D(3, 3, padding="same", pad_values=1.0, name=f"conv_{index}", **kwargs)


def test_keras_round_trip_inside_quant_conv(tmp_path, rng):
    inputs = keras.Input((5, 5, 4))
    outputs = [_conv(q, role, i)(inputs) for i, (q, role) in enumerate(EXAMPLES)]
    model = keras.Model(inputs, outputs)
    # Learned LSQ steps that differ from their initial values must survive the round trip.
    steps = {w.name: w for w in model.weights if w.name.endswith("quantizer_step")}
    assert sorted(steps) == ["input_quantizer_step", "kernel_quantizer_step"]
    steps["input_quantizer_step"].assign(0.4321)
    steps["kernel_quantizer_step"].assign(0.0123)
    x = rng.standard_normal((2, 5, 5, 4)).astype("float32")
    expected = model.predict(x, verbose=0)

    path = tmp_path / "quantizers.keras"
    model.save(path)
    loaded = keras.models.load_model(path)  # safe_mode on, no custom_objects

    got_all = loaded.predict(x, verbose=0)
    for i, ((quantizer, role), want, got) in enumerate(zip(EXAMPLES, expected, got_all)):
        layer = loaded.get_layer(f"conv_{i}")
        for r in ("input", "kernel"):
            if role in (r, "both"):
                assert getattr(layer, f"{r}_quantizer") == quantizer, (i, r)
        np.testing.assert_array_equal(got, want, err_msg=repr(quantizer))
    steps = {w.name: float(w.numpy()) for w in loaded.weights if w.name.endswith("quantizer_step")}
    assert steps == {
        "input_quantizer_step": pytest.approx(0.4321),
        "kernel_quantizer_step": pytest.approx(0.0123),
    }

"""`kerasbnn.summary`: counts on small models computed by hand."""

import keras
import pytest

import kerasbnn
from kerasbnn.layers import QuantConv2D, QuantDense, QuantDepthwiseConv2D
from kerasbnn.quantizers import NoOp, Quantizer

BIN = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"}


def _two_bit():
    return {"input_quantizer": NoOp(precision=2), "kernel_quantizer": NoOp(precision=2)}


def _mixed_model():
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, padding="same", use_bias=False, name="stem")(inputs)
    x = keras.layers.BatchNormalization(name="bn")(x)
    x = QuantConv2D(8, 3, padding="same", use_bias=False, name="bconv", **BIN)(x)
    x = QuantConv2D(8, 1, name="kconv", **_two_bit())(x)
    x = keras.layers.DepthwiseConv2D(3, name="dw")(x)
    x = QuantDepthwiseConv2D(
        3, padding="same", use_bias=False, input_quantizer="ste_sign",
        depthwise_quantizer="ste_sign", name="bdw",
    )(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    x = QuantDense(5, use_bias=False, name="bdense", **BIN)(x)
    outputs = keras.layers.Dense(10, name="fc")(x)
    return keras.Model(inputs, outputs, name="mixed")


def test_counts_match_hand_computation():
    result = kerasbnn.summary(_mixed_model(), print_fn=None)
    by_name = {layer["name"]: layer for layer in result["layers"]}
    # stem: float 3x3x3x4 kernel on 8x8 outputs.
    assert by_name["stem"]["params_by_precision"] == {32: 108}
    assert by_name["stem"]["flops"] == 64 * 108
    # BN: 2 folded float parameters per channel, no operations counted.
    assert by_name["bn"]["params"] == 8 and by_name["bn"]["macs"] == 0
    # Binary 3x3x4x8 conv: 1 bit per weight, one BOP per MAC.
    assert by_name["bconv"]["params_by_precision"] == {1: 288}
    assert by_name["bconv"]["bops"] == 64 * 288 and by_name["bconv"]["flops"] == 0
    assert (by_name["bconv"]["weight_bits"], by_name["bconv"]["input_bits"]) == (1, 1)
    # 2/2-bit 1x1 conv: 64 2-bit weights, float bias; BOPs = MACs * 2 * 2.
    assert by_name["kconv"]["params_by_precision"] == {2: 64, 32: 8}
    assert by_name["kconv"]["bops"] == 64 * 64 * 4
    # Float depthwise 3x3 (valid): 6x6 outputs, 72 weights + 8 biases.
    assert by_name["dw"]["params_by_precision"] == {32: 80}
    assert by_name["dw"]["flops"] == 36 * 72
    # Binary depthwise on 6x6 outputs (same padding).
    assert by_name["bdw"]["params_by_precision"] == {1: 72}
    assert by_name["bdw"]["bops"] == 36 * 72
    assert by_name["bdense"]["params_by_precision"] == {1: 40}
    assert by_name["bdense"]["bops"] == 40
    assert by_name["fc"]["params_by_precision"] == {32: 60}
    assert by_name["fc"]["flops"] == 50

    float_params = 108 + 8 + 8 + 80 + 60
    binary_params = 288 + 72 + 40
    assert result["params_by_precision"] == {1: binary_params, 2: 64, 32: float_params}
    assert result["params"] == float_params + binary_params + 64
    memory_bits = 32 * float_params + 2 * 64 + binary_params
    assert result["memory_mbit"] == pytest.approx(memory_bits / 1e6)
    bops = 64 * 288 + 64 * 64 * 4 + 36 * 72 + 40
    flops = 64 * 108 + 36 * 72 + 50
    assert result["bops"] == bops
    assert result["flops"] == flops
    assert result["ops"] == pytest.approx(bops / 64 + flops)
    macs = 64 * 108 + 64 * 288 + 64 * 64 + 36 * 72 + 36 * 72 + 40 + 50
    assert result["macs"] == macs
    assert result["float_memory_mbit"] == pytest.approx(32 * result["params"] / 1e6)
    assert result["float_ops"] == macs
    assert result["memory_ratio"] == pytest.approx(32 * result["params"] / memory_bits)
    assert result["ops_ratio"] == pytest.approx(macs / (bops / 64 + flops))
    assert result["unknown_precision"] == []


def test_returned_keys_and_no_float_reference():
    model = _mixed_model()
    result = kerasbnn.summary(model, print_fn=None)
    for key in ("params", "memory_mbit", "bops", "flops", "ops", "memory_ratio", "ops_ratio",
                "float_memory_mbit", "float_ops", "params_by_precision", "layers"):
        assert key in result
    plain = kerasbnn.summary(model, print_fn=None, float_reference=False)
    assert "memory_ratio" not in plain and "float_ops" not in plain
    assert plain["ops"] == result["ops"]


def test_float_model_ratios_are_one():
    inputs = keras.Input((6, 6, 2))
    x = keras.layers.Conv2D(3, 3)(inputs)
    outputs = keras.layers.Dense(2)(keras.layers.Flatten()(x))
    result = kerasbnn.summary(keras.Model(inputs, outputs), print_fn=None)
    assert result["bops"] == 0
    assert result["memory_ratio"] == pytest.approx(1.0)
    assert result["ops_ratio"] == pytest.approx(1.0)
    assert result["flops"] == 16 * 54 + 48 * 2


def test_printed_table_names_every_layer():
    lines = []
    model = _mixed_model()
    kerasbnn.summary(model, print_fn=lines.append)
    text = "\n".join(lines)
    for name in ("stem", "bn", "bconv", "kconv", "dw", "bdw", "gap", "bdense", "fc"):
        assert f"{name} (" in text
    assert "OPs = BOPs/64 + FLOPs" in text
    assert "1-bit" in text and "2-bit" in text and "float (32-bit)" in text
    assert "x smaller" in text


def test_nested_models_are_walked():
    block = keras.Sequential(
        [keras.Input((8, 8, 4)), QuantConv2D(4, 3, padding="same", use_bias=False, **BIN)],
        name="block",
    )
    inner_in = keras.Input((8, 8, 4))
    inner = keras.Model(inner_in, block(inner_in), name="stage")
    inputs = keras.Input((8, 8, 4))
    x = inner(inputs)
    outputs = keras.layers.Dense(3, name="fc")(keras.layers.GlobalAveragePooling2D()(x))
    result = kerasbnn.summary(keras.Model(inputs, outputs), print_fn=None)
    names = [layer["name"] for layer in result["layers"]]
    assert "stage/block/quant_conv2d" in names
    assert result["bops"] == 64 * 144
    assert result["params_by_precision"] == {1: 144, 32: 15}


class _Opaque(Quantizer):
    """A quantizer that does not say how many bits it outputs."""

    precision = None

    def call(self, inputs):
        return inputs


def test_unknown_precision_is_counted_as_float_and_flagged():
    inputs = keras.Input((4, 4, 2))
    x = QuantConv2D(2, 3, use_bias=False, input_quantizer="ste_sign", kernel_quantizer=_Opaque(),
                    name="odd")(inputs)
    lines = []
    result = kerasbnn.summary(keras.Model(inputs, x), print_fn=lines.append)
    assert result["unknown_precision"] == ["odd"]
    assert result["params_by_precision"] == {32: 36}
    assert result["flops"] == 4 * 36 and result["bops"] == 0
    assert result["layers"][0]["weight_bits"] == "?"
    assert any("counted as 32-bit: odd" in line for line in lines)


def test_rejects_non_models():
    with pytest.raises(ValueError, match="expects a keras.Model"):
        kerasbnn.summary(keras.layers.Dense(3))


def test_subclassed_model_without_graph_gets_clear_error():
    class Net(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(2, 3)

        def call(self, x):
            return self.conv(x)

    net = Net()
    net(keras.ops.zeros((1, 6, 6, 1)))
    with pytest.raises(ValueError, match="functional API"):
        kerasbnn.summary(net, print_fn=None)


def test_separable_transpose_and_sequence_dense():
    inputs = keras.Input((6, 6, 8))
    x = keras.layers.SeparableConv2D(4, 3, name="sep")(inputs)  # 4x4 outputs
    x = keras.layers.Conv2DTranspose(2, 3, name="deconv")(x)  # scatters 4x4 inputs
    x = keras.layers.Reshape((36, 2))(x)
    outputs = QuantDense(3, use_bias=False, name="seq_dense", **BIN)(x)
    result = kerasbnn.summary(keras.Model(inputs, outputs), print_fn=None)
    by_name = {layer["name"]: layer for layer in result["layers"]}
    assert by_name["sep"]["flops"] == 16 * (3 * 3 * 8) + 16 * (8 * 4)
    assert by_name["sep"]["params"] == 72 + 32 + 4
    assert by_name["deconv"]["flops"] == 16 * (3 * 3 * 2 * 4)
    # The dense kernel runs at each of the 36 positions.
    assert by_name["seq_dense"]["bops"] == 36 * 6
    assert by_name["seq_dense"]["params_by_precision"] == {1: 6}


def _resnet18(binary):
    """ResNet-18 at 224x224; `binary`: Bi-Real style, float stem, 1x1 shortcuts and FC."""
    q = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign"} if binary else {}
    inputs = keras.Input((224, 224, 3))
    x = keras.layers.Conv2D(64, 7, 2, padding="same", use_bias=False)(inputs)
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.MaxPooling2D(3, 2, padding="same")(x)
    channels = 64
    for stage, filters in enumerate([64, 128, 256, 512]):
        for block in range(2):
            stride = 2 if block == 0 and stage > 0 else 1
            shortcut = x
            if stride != 1 or channels != filters:
                shortcut = keras.layers.Conv2D(filters, 1, stride, use_bias=False)(x)
                shortcut = keras.layers.BatchNormalization()(shortcut)
            y = QuantConv2D(filters, 3, stride, padding="same", use_bias=False, **q)(x)
            y = keras.layers.BatchNormalization()(y)
            y = QuantConv2D(filters, 3, padding="same", use_bias=False, **q)(y)
            y = keras.layers.BatchNormalization()(y)
            x = keras.layers.Add()([y, shortcut])
            channels = filters
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inputs, keras.layers.Dense(1000)(x))


def test_resnet18_matches_mad_table_4():
    fp = kerasbnn.summary(_resnet18(binary=False), print_fn=None)
    # MAD Table 4, 32/32: 374.1 Mbit, 18.1e8 FLOPs (= OPs).
    assert fp["params"] == 11_689_512  # torchvision's count: BN folds to 2 per channel
    assert round(fp["memory_mbit"], 1) == 374.1
    assert round(fp["flops"] / 1e8, 1) == 18.1 and fp["bops"] == 0
    bi = kerasbnn.summary(_resnet18(binary=True), print_fn=None)
    # MAD Table 4, 1/1: 33.6 Mbit, 1.39e8 FLOPs, 1.63e8 OPs. Counting only conv/FC MACs gives
    # 33.5 Mbit, 1.378e8 FLOPs and 1.64e8 OPs; the BOPs are the 16 binary 3x3 convs' MACs,
    # 16.76e8 (Bi-Real Net's 1.68e9; MAD prints 15.6e8).
    assert bi["bops"] == 1_676_279_808
    assert bi["flops"] == 118_013_952 + 3 * 6_422_528 + 512_000
    assert bi["memory_mbit"] == pytest.approx(33.6, rel=0.005)
    assert bi["ops"] == pytest.approx(1.63e8, rel=0.01)
    assert bi["memory_ratio"] == pytest.approx(374.1 / 33.6, rel=0.01)

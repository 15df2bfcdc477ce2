"""list_ops / op_counts / read_graph on a flatbuffer, and measure_latency."""

import keras
import pytest

pytest.importorskip("larq_compute_engine")

from kerasbnn import export  # noqa: E402
from kerasbnn.export import _worker  # noqa: E402
from kerasbnn.layers import QuantConv2D  # noqa: E402

pytestmark = pytest.mark.tflite


@pytest.fixture(scope="module")
def flatbuffer(tmp_path_factory):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="stem")(inputs)
    x = QuantConv2D(
        32,
        3,
        padding="same",
        pad_values=1.0,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
    )(x)
    outputs = keras.layers.GlobalAveragePooling2D()(x)
    path = tmp_path_factory.mktemp("inspect") / "m.tflite"
    return export.lce_convert(keras.Model(inputs, outputs), path).flatbuffer, path


def test_list_ops_from_bytes_and_path(flatbuffer):
    data, path = flatbuffer
    assert export.list_ops(data) == ["CONV_2D", "LceQuantize", "LceBconv2d", "MEAN"]
    assert export.list_ops(path) == export.list_ops(str(path)) == export.list_ops(data)
    assert export.op_counts(data) == {"CONV_2D": 1, "LceBconv2d": 1, "LceQuantize": 1, "MEAN": 1}


def test_read_graph_wiring(flatbuffer):
    graph = export.read_graph(flatbuffer[0])
    bconv = next(op for op in graph.ops if op.name == "LceBconv2d")
    assert graph.producer(bconv.inputs[0]).name == "LceQuantize"
    assert graph.tensors[bconv.inputs[0]].dtype == "INT32"  # bitpacked activations
    assert graph.tensors[bconv.outputs[0]].shape == (1, 8, 8, 32)
    assert graph.producer(graph.ops[0].inputs[0]) is None  # the model input


def test_not_a_flatbuffer():
    with pytest.raises(ValueError, match="Not a TFLite flatbuffer"):
        export.list_ops(b"\x00" * 64)
    with pytest.raises(ValueError, match="Expected a .tflite path or the flatbuffer bytes"):
        export.list_ops(42)


def test_measure_latency(flatbuffer):
    ms = export.measure_latency(flatbuffer[0], runs=3, warmup=1)
    assert 0 < ms < 1000
    assert (
        export.measure_latency(
            flatbuffer[1], runs=1, warmup=0, use_indirect_bgemm=False, use_xnnpack=True
        )
        > 0
    )
    with pytest.raises(ValueError, match="runs and num_threads must be >= 1"):
        export.measure_latency(flatbuffer[0], runs=0)
    fastest = export.measure_latency(flatbuffer[0], runs=3, warmup=0, statistic="min")
    assert 0 < fastest < 1000
    with pytest.raises(ValueError, match='statistic must be "median" or "min"'):
        export.measure_latency(flatbuffer[0], statistic="mean")


def test_compare_latency_interleaves(flatbuffer):
    ms = export.compare_latency(
        {"indirect": flatbuffer[0], "xnnpack": (flatbuffer[1], {"use_xnnpack": True})},
        runs=2,
        warmup=0,
    )
    assert set(ms) == {"indirect", "xnnpack"} and all(0 < v < 1000 for v in ms.values())
    with pytest.raises(ValueError, match="at least one"):
        export.compare_latency({})


def test_worker_reads_saved_model_schema_version(tmp_path):
    inputs = keras.Input((4,))
    model = keras.Model(inputs, keras.layers.Dense(2)(inputs))
    model.export(tmp_path / "sm", format="tf_saved_model", verbose=False)
    assert _worker.saved_model_schema_version(str(tmp_path / "sm")) == 1
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "saved_model.pb").write_bytes(b"\x0a\xff")
    with pytest.raises(ValueError, match="Cannot parse"):
        _worker.saved_model_schema_version(str(tmp_path / "bad"))


@pytest.mark.slow
def test_native_converter_matches_lce_wrapper(tmp_path):
    """The worker's direct call gives the same bytes as larq_compute_engine.convert_saved_model."""
    import larq_compute_engine as lce
    import tensorflow as tf

    inputs = keras.Input((8, 8, 3))
    x = QuantConv2D(
        32,
        3,
        padding="same",
        pad_values=1.0,
        input_quantizer="ste_sign",
        kernel_quantizer="ste_sign",
    )(inputs)
    model = keras.Model(inputs, keras.layers.BatchNormalization()(x))
    model.export(
        tmp_path,
        format="tf_saved_model",
        input_signature=[tf.TensorSpec([1, 8, 8, 3])],
        verbose=False,
    )
    assert export.convert_saved_model(tmp_path) == lce.convert_saved_model(str(tmp_path))

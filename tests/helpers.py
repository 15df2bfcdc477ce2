"""Reusable test checks, the public-API equivalent of Keras' `run_layer_test`.

`check_layer` redoes what keras/src/testing/test_case.py checks for a layer (config ->
JSON -> `from_config` gives the same config, a `.keras` round trip with safe_mode gives
identical outputs, weight counts, one training step) with public Keras APIs only.
`check_serialization` does the same for plain serializable objects (quantizers,
constraints). `lce_convert` converts saved models with Larq Compute Engine in a
subprocess and lists the ops of each flatbuffer. `benchmark` imports a script of
benchmarks/, `quick_paired_run` runs a paired-seed benchmark's `--quick` smoke run.
"""

import importlib.util
import json
import os
import pathlib
import subprocess
import sys
import tempfile

import keras
import numpy as np

from kerasbnn.layers.base import same_padding_amounts

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]


def benchmark(name):
    """The module of `benchmarks/<name>.py`, imported afresh (its `main` is not run)."""
    spec = importlib.util.spec_from_file_location(name, REPO_ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def quick_paired_run(name, tmp_path, *extra):
    """`(record, printed lines, saved JSON)` of `benchmarks/<name>.py --quick` with run
    directories and results under `tmp_path`; checks the saved JSON holds the last line and
    the quick run's 2 seeds."""
    lines = []
    out = tmp_path / f"{name}.json"
    record = benchmark(name).main(["--quick", "--root", str(tmp_path / "runs"), "--out", str(out),
                                   *extra], print_fn=lines.append)
    saved = json.loads(out.read_text())
    assert saved["line"] == lines[-1] and len(saved["seeds"]) == 2
    return record, lines, saved


def _json_round_trip(config):
    return json.loads(json.dumps(config))


def check_serialization(obj):
    """Serializes `obj` to JSON and back; returns the restored object.

    Checks that `serialize_keras_object` output is JSON-ready, that the restored object
    has the same type and the same `get_config()`.
    """
    serialized = keras.saving.serialize_keras_object(obj)
    restored = keras.saving.deserialize_keras_object(_json_round_trip(serialized))
    assert type(restored) is type(obj)
    assert _json_round_trip(restored.get_config()) == _json_round_trip(obj.get_config())
    return restored


def check_layer(
    layer_cls,
    init_kwargs,
    input_data,
    *,
    expected_output_shape=None,
    expected_num_trainable_weights=None,
    expected_num_non_trainable_weights=0,
    run_training_step=True,
    tmp_path=None,
    atol=1e-6,
):
    """Runs the standard checks on `layer_cls(**init_kwargs)`; returns the test model.

    Args:
        layer_cls: the layer class.
        init_kwargs: constructor arguments.
        input_data: a NumPy batch; the model input has its shape without the batch axis.
        expected_output_shape: full output shape for `input_data` (batch included), or None.
        expected_num_trainable_weights: checked when not None.
        expected_num_non_trainable_weights: checked when not None.
        run_training_step: fit one SGD step on an MSE loss (before the save/load check) and
            check that every trainable weight received a finite, nonzero update.
        tmp_path: folder for the `.keras` file (a temporary one when None).
        atol: tolerance of the save/load output comparison.

    Returns:
        The functional `keras.Model` wrapping the layer.
    """
    layer = layer_cls(**init_kwargs)
    config = layer.get_config()
    restored = layer_cls.from_config(_json_round_trip(config))
    assert _json_round_trip(restored.get_config()) == _json_round_trip(config)
    check_serialization(layer)

    inputs = keras.Input(shape=input_data.shape[1:], batch_size=None)
    model = keras.Model(inputs, layer(inputs))
    outputs = np.asarray(model(input_data))
    if expected_output_shape is not None:
        assert outputs.shape == tuple(expected_output_shape)
    assert np.all(np.isfinite(outputs))
    if expected_num_trainable_weights is not None:
        assert len(layer.trainable_weights) == expected_num_trainable_weights
    if expected_num_non_trainable_weights is not None:
        assert len(layer.non_trainable_weights) == expected_num_non_trainable_weights

    if run_training_step:
        before = [np.array(w) for w in layer.trainable_weights]
        model.compile(optimizer=keras.optimizers.SGD(0.1), loss="mse")
        target = np.random.default_rng(0).normal(size=outputs.shape).astype("float32")
        loss = model.train_on_batch(input_data, target)
        assert np.isfinite(loss)
        for w, old in zip(layer.trainable_weights, before):
            new = np.array(w)
            assert np.all(np.isfinite(new)), w.path
            assert not np.array_equal(new, old), f"{w.path} did not change in a training step"
    # Saved after the training step, so that constant-initialised weights (XNOR++ scales,
    # LSQ steps) hold values a freshly built layer would not have.
    outputs = np.asarray(model(input_data))
    with tempfile.TemporaryDirectory() as tmp:
        path = pathlib.Path(tmp_path or tmp) / f"{layer.name}.keras"
        model.save(path)
        loaded = keras.models.load_model(path)  # safe_mode=True, no custom_objects
    loaded_layer = loaded.layers[-1]
    assert type(loaded_layer) is layer_cls
    assert _json_round_trip(loaded_layer.get_config()) == _json_round_trip(layer.get_config())
    assert [w.name for w in loaded_layer.weights] == [w.name for w in layer.weights]
    for saved, restored_weight in zip(layer.weights, loaded_layer.weights):
        np.testing.assert_array_equal(
            np.asarray(restored_weight), np.asarray(saved), err_msg=saved.path
        )
    np.testing.assert_allclose(np.asarray(loaded(input_data)), outputs, atol=atol)
    return model


class KillAt(keras.callbacks.Callback):
    """A simulated kill: raises KeyboardInterrupt as epoch `epoch` begins, or with `at_end`
    once it has ended (after `fit_resumable`'s backup of it, the caller's callbacks running
    last)."""

    def __init__(self, epoch, at_end=False):
        super().__init__()
        self.epoch, self.at_end = epoch, at_end

    def on_epoch_begin(self, epoch, logs=None):
        if epoch == self.epoch and not self.at_end:
            raise KeyboardInterrupt("simulated kill")

    def on_epoch_end(self, epoch, logs=None):
        if epoch == self.epoch and self.at_end:
            raise KeyboardInterrupt("simulated kill")


def train_losses(model, x, y, steps=15, learning_rate=0.01):
    """Runs `steps` eager Adam steps of sparse cross-entropy (from logits) on one batch.

    An eager loop costs far less CPU than tracing `fit` for a handful of steps. Constraints
    are applied after each step, as `fit` does.

    Returns:
        The loss before every step, as a list of floats.
    """
    import tensorflow as tf

    optimizer = keras.optimizers.Adam(learning_rate)
    loss_fn = keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    losses = []
    for _ in range(steps):
        with tf.GradientTape() as tape:
            loss = loss_fn(y, model(x, training=True))
        optimizer.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)
        losses.append(float(loss))
    return losses


# NumPy references shared by the layer tests.


def np_sign(x):
    """sign with sign(0) = +1, as kerasbnn's binarizers and LCE define it."""
    return np.where(x >= 0, 1.0, -1.0).astype("float32")


def np_conv2d(x, w, strides=(1, 1), pads=((0, 0), (0, 0)), pad_value=0.0, dilation=(1, 1)):
    """NHWC x HWIO cross-correlation with explicit constant padding."""
    x = np.pad(x, [(0, 0), *pads, (0, 0)], constant_values=pad_value)
    (kh, kw, _, out_channels), (sh, sw), (dh, dw) = w.shape, strides, dilation
    rows = (x.shape[1] - (kh - 1) * dh - 1) // sh + 1
    cols = (x.shape[2] - (kw - 1) * dw - 1) // sw + 1
    y = np.zeros((x.shape[0], rows, cols, out_channels), "float64")
    for i in range(kh):
        for j in range(kw):
            patch = x[
                :,
                i * dh : i * dh + (rows - 1) * sh + 1 : sh,
                j * dw : j * dw + (cols - 1) * sw + 1 : sw,
            ]
            y += np.einsum("bhwc,co->bhwo", patch, w[i, j])
    return y


def same_pads(shape, kernel, strides, dilation=(1, 1)):
    """TF's SAME `(before, after)` amounts for each spatial dimension."""
    return tuple(
        same_padding_amounts(s, k, st, d) for s, k, st, d in zip(shape, kernel, strides, dilation)
    )


_LCE_SCRIPT = r"""
import json, os, sys
os.environ["TF_CPP_MIN_LOG_LEVEL"] = "3"
import numpy as np
import tensorflow as tf
import keras
import kerasbnn
import larq_compute_engine as lce
from larq_compute_engine.mlir.python import tflite_schema
from larq_compute_engine.tflite.python.interpreter import Interpreter

kerasbnn.register_all()  # the serializable classes, for keras.models.load_model

names = {v: k for k, v in vars(tflite_schema.BuiltinOperator).items() if not k.startswith("_")}

def list_ops(fb):
    model = tflite_schema.ModelT.InitFromObj(tflite_schema.Model.GetRootAsModel(fb, 0))
    codes = [c.customCode.decode() if c.customCode else
             names[max(c.builtinCode, c.deprecatedBuiltinCode)] for c in model.operatorCodes]
    return [codes[op.opcodeIndex] for op in model.subgraphs[0].operators]

folder = sys.argv[1]
results = {}
for file in sorted(os.listdir(folder)):
    if not file.endswith(".keras"):
        continue
    name = file[: -len(".keras")]
    model = keras.models.load_model(os.path.join(folder, file))
    x = np.load(os.path.join(folder, name + ".npy"))
    saved = os.path.join(folder, name + "_saved")
    model.export(saved, input_signature=[tf.TensorSpec(x.shape, tf.float32)], verbose=False)
    fb = lce.convert_saved_model(saved)
    try:
        out = Interpreter(fb, num_threads=1).predict(x)
        diff = float(np.max(np.abs(np.asarray(out) - np.asarray(model(x)))))
        error = None
    except RuntimeError as e:  # the flatbuffer does not run: report, do not hide the ops
        diff, error = float("inf"), str(e)
    results[name] = {"ops": list_ops(fb), "max_abs_diff": diff, "error": error}
print("RESULTS=" + json.dumps(results))
"""


def lce_convert(models, inputs, folder):
    """Converts Keras models with LCE in one subprocess (a converter crash cannot kill pytest).

    Each model is saved as `.keras`, loaded back in the child, exported with
    `model.export(dir, input_signature=[TensorSpec(x.shape)])` and converted with
    `larq_compute_engine.convert_saved_model`; the child runs the flatbuffer in LCE's
    interpreter on the same batch.

    Args:
        models: dict name -> built `keras.Model` with one input.
        inputs: dict name -> NumPy batch (float32) for that model.
        folder: a writable directory.

    Returns:
        dict name -> {"ops": op names in execution order, "max_abs_diff": float (inf when
        the LCE interpreter fails), "error": the interpreter's error message or None}.
    """
    folder = pathlib.Path(folder)
    for name, model in models.items():
        model.save(folder / f"{name}.keras")
        np.save(folder / f"{name}.npy", inputs[name].astype("float32"))
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    env.pop("TF_USE_LEGACY_KERAS", None)
    proc = subprocess.run(
        [sys.executable, "-c", _LCE_SCRIPT, str(folder)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=600,
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULTS=")]
    assert proc.returncode == 0 and lines, proc.stderr[-4000:]
    return json.loads(lines[-1][len("RESULTS=") :])


def free_ports(count):
    """`count` TCP ports on localhost that were free a moment ago."""
    import socket

    sockets = [socket.socket() for _ in range(count)]
    for s in sockets:
        s.bind(("localhost", 0))
    ports = [s.getsockname()[1] for s in sockets]
    for s in sockets:
        s.close()
    return ports


def run_local_workers(argv, workers=2, timeout=600, cwd=None):
    """Runs `python argv...` as `workers` local processes of one `TF_CONFIG` cluster.

    Each process gets the same cluster and its own `task` index; all are killed when one
    fails or the time runs out (a lone worker would wait for the others forever).

    Returns:
        A list of `(returncode, stdout, stderr)`, one per worker, in index order.
    """
    hosts = [f"localhost:{port}" for port in free_ports(workers)]
    procs = []
    for index in range(workers):
        tf_config = {"cluster": {"worker": hosts}, "task": {"type": "worker", "index": index}}
        env = {**os.environ, "TF_CONFIG": json.dumps(tf_config), "TF_CPP_MIN_LOG_LEVEL": "3"}
        procs.append(subprocess.Popen([sys.executable, *argv], env=env, cwd=cwd, text=True,
                                      stdout=subprocess.PIPE, stderr=subprocess.PIPE))
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            results.append((proc.returncode, out, err))
            if proc.returncode != 0:
                break
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
                out, err = proc.communicate()
                results.append((proc.returncode, out, err))
    return results

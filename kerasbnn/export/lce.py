"""Keras 3 model -> Larq Compute Engine flatbuffer, audited and verified.

The path is the one LCE.md (sections 0-4) measured: `model.export(..., format="tf_saved_model")`
with a batch-1 float32 signature, then LCE's converter (the native function behind
`larq_compute_engine.convert_saved_model`) in a separate process, then an audit of the ops
in the file against the model's binary layers, then a layer-by-layer verification of the
LCE interpreter against Keras (`kerasbnn.export.verify`). The `.tflite` file is written last,
atomically, and only when everything that was asked for passed.
"""

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import warnings

import keras
import numpy as np

from kerasbnn.export import inspect
from kerasbnn.export import verify as verification
from kerasbnn.layers.base import constant_quantized_weights, iter_layers

__all__ = [
    "ExportError",
    "ConverterError",
    "BinarizationError",
    "VerificationError",
    "ConversionReport",
    "check_writable",
    "convert_saved_model",
    "float32_model",
    "lce_convert",
]

TARGETS = ("arm", "xcore")
_FLOAT_LINEAR_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "BATCH_MATMUL",
    "TRANSPOSE_CONV",
)
_BINARIZER_OPS = ("LceDequantize",)
# The worker runs as a file, not `-m kerasbnn...`: importing the package would import Keras
# and TensorFlow in the child for nothing (see _worker.py). Dropping sys.path[0] keeps the
# caller's working directory from shadowing modules.
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")
_WORKER_BOOTSTRAP = (
    "import sys, runpy; del sys.path[0]; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl|[WIE]\d{4} \d\d:\d\d:\d\d)")


class ExportError(RuntimeError):
    """Base class of the errors `lce_convert` raises after the model was accepted.

    Attributes:
        report: the `ConversionReport` so far (None when conversion itself failed).
    """

    def __init__(self, message, report=None):
        super().__init__(message)
        self.report = report


class ConverterError(ExportError):
    """The LCE converter failed or crashed (its process died); the message quotes its stderr."""


class BinarizationError(ExportError):
    """A layer the model declares binary did not become an `LceBconv2d` op."""


class VerificationError(ExportError):
    """LCE computes something else than Keras: a binarized input that differs beyond float
    rounding (the message names the layer), or outputs that differ with the same bits."""


@dataclasses.dataclass
class ConversionReport:
    """What `lce_convert` produced and checked.

    Attributes:
        path: the `.tflite` file written (None if nothing was written).
        file_size: size of the flatbuffer in bytes.
        target: converter target, "arm" or "xcore".
        int8: "off", "qat" (the model carried FakeQuant ranges) or "dummy-range"
            (latency-only: every range is `int8_range`, outputs are meaningless).
        binary_layers: names of the model's layers whose `is_binary` is true.
        bconv_ops: number of `LceBconv2d` ops in the file.
        bitpacked_bconv_ops: how many of them write bitpacked (INT32) outputs.
        unconverted_layers: binary layers that did not become `LceBconv2d`, `{name: reason}`.
        float_convs_fed_by_binarizer: output tensor names of float conv/FC ops whose input
            comes from `LceDequantize` (a binarized tensor computed in float: slower than float).
        op_counts: `{op name: count}` for the whole file.
        max_abs_diff: max |Keras - LCE| over the sample batch (None when not verified).
        mismatch_fraction: fraction of output values outside `atol + rtol * max|y|`.
        top1_agreement: fraction of examples on which Keras and LCE pick the same class
            (None for a single output value).
        num_samples: examples compared (the interpreter runs them one by one, batch 1).
        atol: absolute tolerance the comparison used.
        rtol: tolerance relative to the largest output value of each example.
        forced_max_abs_diff: max |Keras - LCE| with LCE's binarized inputs forced into
            every binary layer of Keras (see `kerasbnn.export.verify`).
        flipped_bits: `{layer: bits}` where LCE binarized a value differently from Keras,
            each at a value that is zero up to float rounding when the verification passed.
        first_flip: `(layer, bits)`: the first binary layer whose binarized input differs.
        max_flip_margin: the largest |x| / max|x| at a flipped bit.
        notes: anything the reader should know (dummy int8 ranges, partial binarization).
        flatbuffer: the converted bytes (not printed).
    """

    path: str = None
    file_size: int = 0
    target: str = "arm"
    int8: str = "off"
    binary_layers: list = dataclasses.field(default_factory=list)
    bconv_ops: int = 0
    bitpacked_bconv_ops: int = 0
    unconverted_layers: dict = dataclasses.field(default_factory=dict)
    float_convs_fed_by_binarizer: list = dataclasses.field(default_factory=list)
    op_counts: dict = dataclasses.field(default_factory=dict)
    max_abs_diff: float = None
    mismatch_fraction: float = None
    top1_agreement: float = None
    num_samples: int = 0
    atol: float = None
    rtol: float = None
    forced_max_abs_diff: float = None
    flipped_bits: dict = dataclasses.field(default_factory=dict)
    first_flip: tuple = None
    max_flip_margin: float = None
    notes: list = dataclasses.field(default_factory=list)
    flatbuffer: bytes = dataclasses.field(default=b"", repr=False)

    @property
    def binarization_ok(self):
        """True if every binary layer became an `LceBconv2d` and no float conv reads a binarizer."""
        return (
            self.bconv_ops == len(self.binary_layers)
            and not self.unconverted_layers
            and not self.float_convs_fed_by_binarizer
        )

    def _flip_line(self):
        if not self.binary_layers:
            return "  binarized inputs     none (no binary layer)"
        if self.first_flip is None:
            return "  binarized inputs     identical in every binary layer"
        layer, bits = self.first_flip
        return (
            f"  binarized inputs     {sum(self.flipped_bits.values())} bit(s) rounded the other "
            f"way in {len(self.flipped_bits)} layer(s), first {layer} ({bits}); largest "
            f"|x| there {self.max_flip_margin:.1g} of the layer's range; with LCE's bits "
            f"Keras matches to {self.forced_max_abs_diff:.3g}"
        )

    def to_dict(self):
        """The report as JSON-ready data (without the flatbuffer bytes)."""
        data = dataclasses.asdict(self)
        del data["flatbuffer"]
        data["binarization_ok"] = self.binarization_ok
        return data

    def __str__(self):
        size = (
            f"{self.file_size / 1e6:.2f} MB"
            if self.file_size >= 1e5
            else f"{self.file_size / 1e3:.1f} kB"
        )
        lines = [
            f"LCE conversion report: {self.path or '(not written)'}",
            f"  file size            {size} ({self.file_size} bytes), "
            f"target {self.target}, int8 {self.int8}",
            f"  binary layers        {len(self.binary_layers)} in the model",
            f"  LceBconv2d ops       {self.bconv_ops} in the file "
            f"({self.bitpacked_bconv_ops} with bitpacked output)",
            f"  LceQuantize          {self.op_counts.get('LceQuantize', 0)}, "
            f"LceDequantize {self.op_counts.get('LceDequantize', 0)}, "
            f"float convs fed by a binarizer {len(self.float_convs_fed_by_binarizer)}",
            "  ops                  " + ", ".join(f"{k} {v}" for k, v in self.op_counts.items()),
        ]
        if self.max_abs_diff is None:
            lines.append("  max |Keras - LCE|    not verified")
        else:
            lines.append(
                f"  max |Keras - LCE|    {self.max_abs_diff:.3g} over {self.num_samples} samples "
                f"(tolerance {self.atol:g} + {self.rtol:g} * max|y|, "
                f"{100 * self.mismatch_fraction:.2f}% of outputs above it)"
            )
            if self.top1_agreement is not None:
                lines.append(f"  top-1 agreement      {100 * self.top1_agreement:.1f}%")
            lines.append(self._flip_line())
        for name, reason in self.unconverted_layers.items():
            lines.append(f"  NOT BINARY: {name}: {reason}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)


def _stderr_tail(stderr, lines=15):
    kept = [line for line in stderr.splitlines() if line.strip() and not _LOG_LINE.match(line)]
    return "\n".join(kept[-lines:])


def convert_saved_model(saved_model_dir, *, target="arm", default_int8_range=None, timeout=None):
    """Runs `larq_compute_engine.convert_saved_model` in a child process.

    A converter crash (an LLVM abort, a segfault) then ends the child, not the caller's
    Python session, and comes back as a `ConverterError`.

    Args:
        saved_model_dir: a TF SavedModel with a `serving_default` signature.
        target: "arm" or "xcore" (LCE's converter targets).
        default_int8_range: `(min, max)` used as the range of every tensor without one
            (LCE's `experimental_default_int8_range`: latency experiments only), or None.
        timeout: seconds before the child is killed, or None.

    Returns:
        The flatbuffer bytes.

    Raises:
        ValueError: for an unknown target.
        ConverterError: if the converter raised, crashed, or timed out.
    """
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, received {target!r}.")
    with tempfile.TemporaryDirectory(prefix="kerasbnn_lce_") as tmp:
        output = os.path.join(tmp, "model.tflite")
        options = {
            "saved_model_dir": os.fspath(saved_model_dir),
            "output": output,
            "target": target,
            "default_int8_range": list(default_int8_range) if default_int8_range else None,
        }
        env = dict(os.environ)
        env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
        # The converter needs no Keras; a legacy-Keras switch inherited from a larq session
        # would only slow the child's imports.
        env.pop("TF_USE_LEGACY_KERAS", None)
        try:
            result = subprocess.run(
                [sys.executable, "-c", _WORKER_BOOTSTRAP, _WORKER, json.dumps(options)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=env,
            )
        except subprocess.TimeoutExpired as error:
            raise ConverterError(f"The LCE converter did not finish within {timeout} s.") from error
        if result.returncode < 0:
            try:
                name = signal.Signals(-result.returncode).name
            except ValueError:
                name = f"signal {-result.returncode}"
            raise ConverterError(
                f"The LCE converter crashed ({name}) while converting {saved_model_dir}; your "
                f"Python session is unaffected. Converter output:\n{_stderr_tail(result.stderr)}"
            )
        if result.returncode != 0 or not os.path.exists(output):
            tail = _stderr_tail(result.stderr)
            last = tail.splitlines()[-1] if tail else "no output"
            raise ConverterError(
                f"The LCE converter failed (exit status {result.returncode}) on {saved_model_dir}: "
                f"{last}\nConverter output:\n{tail}"
            )
        with open(output, "rb") as f:
            return f.read()


def check_writable(path, what="the .tflite file"):
    """Checks, before any slow work, that a file can be written at `path`.

    Args:
        path: the destination file.
        what: how messages name the file.

    Returns:
        The absolute path.

    Raises:
        ValueError: `path` is empty, a directory, or its folder does not exist.
        PermissionError: the existing file is read-only or the folder is not writable.
    """
    if path is None or not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise ValueError(f"path must be a file path such as 'model.tflite', received {path!r}.")
    path = os.path.abspath(os.fspath(path))
    if os.path.isdir(path):
        raise ValueError(
            f"Cannot write {what} to {path}: it is a directory; give a file name."
        )
    parent = os.path.dirname(path)
    if not os.path.isdir(parent):
        raise ValueError(
            f"Cannot write {what} to {path}: the folder {parent} does not exist "
            f"(or is not a folder); create it first."
        )
    if os.path.exists(path) and not os.access(path, os.W_OK):
        raise PermissionError(
            f"Cannot write {what} to {path}: the existing file is read-only."
        )
    # os.access is always true for root; creating a file is the real test.
    try:
        fd, probe = tempfile.mkstemp(dir=parent, prefix=".kerasbnn_probe_")
    except OSError as error:
        raise PermissionError(
            f"Cannot write {what} to {path}: the folder {parent} is not writable "
            f"({error.strerror})."
        ) from error
    os.close(fd)
    os.remove(probe)
    return path


def _write_atomically(path, data):
    parent = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(dir=parent, prefix=f".{os.path.basename(path)}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _input_shape(model):
    if not isinstance(model, keras.Model):
        raise ValueError(f"Expected a keras.Model, received {type(model).__name__}.")
    try:
        inputs = model.inputs
    except AttributeError:
        inputs = None
    if not inputs:
        raise ValueError(
            f"Model {model.name!r} has no defined inputs: build it as a functional or Sequential "
            "model with an Input of known shape (H, W, C) before converting."
        )
    if len(inputs) != 1:
        raise ValueError(
            f"lce_convert supports models with one input; {model.name!r} has {len(inputs)}."
        )
    shape = tuple(inputs[0].shape[1:])
    if len(shape) != 3 or any(d is None for d in shape):
        raise ValueError(
            f"lce_convert needs an image input of known shape (H, W, C); model {model.name!r} "
            f"has input shape {tuple(inputs[0].shape)}."
        )
    return tuple(int(d) for d in shape)


def _is_float32(layer):
    policy = getattr(layer, "dtype_policy", None)
    if policy is None:
        return True
    return policy.compute_dtype == "float32" and policy.variable_dtype in ("float32", None)


def _force_float32(config):
    if isinstance(config, dict):
        out = {}
        for key, value in config.items():
            if (
                key == "dtype"
                and isinstance(value, dict)
                and value.get("class_name", "").endswith("DTypePolicy")
            ):
                out[key] = "float32"
            else:
                out[key] = _force_float32(value)
        return out
    if isinstance(config, list):
        return [_force_float32(v) for v in config]
    return config


def float32_model(model):
    """The model itself if it computes in float32, else a float32 rebuild with the same weights.

    Mixed-precision (`mixed_float16`) models convert, but LCE then feeds float16 into
    `LceQuantize` and the interpreter cannot allocate tensors (LCE.md section 3).

    Raises:
        ValueError: if the model is mixed precision and cannot be rebuilt from its config.
    """
    if all(_is_float32(layer) for layer in iter_layers(model)):
        return model
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy("float32")
    try:
        config = _force_float32(keras.saving.serialize_keras_object(model))
        rebuilt = keras.saving.deserialize_keras_object(config)
        rebuilt.set_weights(model.get_weights())
    except Exception as error:
        raise ValueError(
            f"Model {model.name!r} uses mixed precision and could not be rebuilt in float32 "
            f"from its config ({type(error).__name__}: {error}). Build it under "
            "keras.config.set_dtype_policy"
            "('float32'), copy the weights with set_weights, and convert that copy."
        ) from error
    finally:
        keras.config.set_dtype_policy(previous)
    return rebuilt


def _contains_fake_quant(saved_model_dir):
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        proto.ParseFromString(f.read())
    for meta_graph in proto.meta_graphs:
        nodes = list(meta_graph.graph_def.node)
        for function in meta_graph.graph_def.library.function:
            nodes.extend(function.node_def)
        if any(node.op.startswith("FakeQuantWithMinMax") for node in nodes):
            return True
    return False


def _mentions(names, layer_name):
    pattern = re.compile(r"(^|/)" + re.escape(layer_name) + r"(_\d+)?(/|$)")
    return any(pattern.search(name) for name in names)


def _unconverted_reason(layer, target):
    from kerasbnn.quantizers import SteHeaviside

    if "Depthwise" in type(layer).__name__:
        return "LCE has no binary depthwise kernel; keep depthwise convolutions float."
    for role in getattr(layer, "_quantizer_roles", ()):
        if isinstance(getattr(layer, f"{role}_quantizer", None), SteHeaviside):
            return (
                f"its {role}_quantizer ste_heaviside outputs {{0, 1}}, which LCE cannot bitpack; "
                "use ste_sign, approx_sign or swish_sign."
            )
    groups = getattr(layer, "groups", 1)
    if groups > 1:
        return "grouped binary convolutions need a multiple of 32 input channels per group."
    pad_values = getattr(layer, "pad_values", 1.0)
    no_kernel = pad_values not in (0.0, 1.0) or (target == "xcore" and pad_values == 0.0)
    if getattr(layer, "padding", None) == "same" and no_kernel:
        return (
            f"'same' padding with pad_values={pad_values} has no binary kernel here; "
            "use pad_values=1.0."
        )
    return (
        "its binarizer or layout is not a pattern the LCE converter recognises "
        "(see LCE.md section 1: binarize once, with where(x >= 0, 1, -1), right before the conv)."
    )


def _audit(graph, binary_layers, target):
    bconvs = [op for op in graph.ops if op.name == "LceBconv2d"]
    fed = []
    suspects = []
    for op in graph.ops:
        if op.name not in _FLOAT_LINEAR_OPS:
            continue
        producers = [graph.producer(i) for i in op.inputs]
        names = [graph.tensors[op.inputs[0]].name, *(graph.tensors[i].name for i in op.outputs)]
        if any(p is not None and p.name in _BINARIZER_OPS for p in producers):
            fed.append(graph.tensors[op.outputs[0]].name)
        for layer in binary_layers:
            if layer not in suspects and _mentions(names, layer.name):
                suspects.append(layer)
    # Tensor names only hint at layers (auto names such as quant_conv2d / quant_conv2d_1 can
    # collide after tracing), so they name culprits only once the op count shows some.
    unconverted = {}
    if len(bconvs) < len(binary_layers):
        unconverted = {layer.name: _unconverted_reason(layer, target) for layer in suspects}
    if len(bconvs) < len(binary_layers) and not unconverted:
        bconv_names = [n for op in bconvs for n in graph.tensor_names(op)]
        unmatched = [layer for layer in binary_layers if not _mentions(bconv_names, layer.name)]
        for layer in unmatched or binary_layers:
            unconverted[layer.name] = (
                "could not be matched to an LceBconv2d op (candidate); "
                + _unconverted_reason(layer, target)
            )
    bitpacked = sum(graph.tensors[op.outputs[0]].dtype == "INT32" for op in bconvs)
    return len(bconvs), bitpacked, unconverted, fed


def _prepare_sample(sample, shape, num_samples, seed):
    if sample is None:
        return np.random.default_rng(seed).standard_normal((num_samples, *shape)).astype("float32")
    if isinstance(sample, (tuple, list)) and len(sample) == 2 and np.ndim(sample[0]) == 4:
        sample = sample[0]  # an (x, y) pair
    sample = np.asarray(sample, dtype="float32")
    if sample.shape == shape:
        sample = sample[None]
    if sample.ndim != 4 or tuple(sample.shape[1:]) != shape:
        raise ValueError(
            f"sample must have shape (N, {', '.join(map(str, shape))}) to match the model input, "
            f"received {sample.shape}."
        )
    return sample


def _check_arguments(target, int8, atol, num_samples, int8_range):
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, received {target!r}.")
    if not isinstance(int8, bool):
        raise ValueError(f"int8 must be True or False, received {int8!r}.")
    if atol is not None and not atol > 0:
        raise ValueError(f"atol must be positive, received {atol!r}.")
    if not (isinstance(num_samples, int) and num_samples >= 1):
        raise ValueError(f"num_samples must be a positive integer, received {num_samples!r}.")
    if int8 and not (len(int8_range) == 2 and int8_range[0] < 0 < int8_range[1]):
        raise ValueError(
            f"int8_range must be (min, max) with min < 0 < max, received {int8_range!r}."
        )


def _export_and_convert(model, export_model, shape, report, *, int8, int8_range, verify, atol,
                        timeout):
    """SavedModel export (quantized weights as constants), then LCE; fills `report.int8`."""
    import tensorflow as tf

    with (
        tempfile.TemporaryDirectory(prefix="kerasbnn_savedmodel_") as saved_model_dir,
        constant_quantized_weights(export_model),
    ):
        export_model.export(
            saved_model_dir,
            format="tf_saved_model",
            input_signature=[tf.TensorSpec([1, *shape], tf.float32)],
            verbose=False,
        )
        default_range = None
        if _contains_fake_quant(saved_model_dir):
            report.int8 = "qat"
            if atol is None and verify:
                report.notes.append(
                    "FakeQuant ranges made this an int8 model; its outputs were compared with "
                    "Keras but not held to a tolerance (pass atol= to enforce one)."
                )
        elif int8:
            report.int8 = "dummy-range"
            default_range = tuple(float(v) for v in int8_range)
            note = (
                f"int8 with dummy ranges {default_range}: for latency measurements only, the "
                "outputs are meaningless (train with FakeQuant for a real int8 model); "
                "not compared."
            )
            report.notes.append(note)
            warnings.warn(
                f"Model {model.name!r} has no FakeQuant ranges: {note}", UserWarning, stacklevel=3
            )
        return convert_saved_model(
            saved_model_dir, target=report.target, default_int8_range=default_range,
            timeout=timeout
        )


def _audit_into(report, flatbuffer, binary_layers):
    graph = inspect.read_graph(flatbuffer)
    report.flatbuffer = flatbuffer
    report.file_size = len(flatbuffer)
    report.op_counts = inspect.op_counts(flatbuffer)
    (
        report.bconv_ops,
        report.bitpacked_bconv_ops,
        report.unconverted_layers,
        report.float_convs_fed_by_binarizer,
    ) = _audit(graph, binary_layers, report.target)
    if report.op_counts.get("LceDequantize"):
        report.notes.append(
            f"{report.op_counts['LceDequantize']} LceDequantize op(s): a binarized tensor is "
            "used in float (e.g. a 1-bit input quantizer with float weights), which is slower "
            "than float."
        )


def _raise_binarization_error(report, path):
    names = ", ".join(report.unconverted_layers) or "(see float convs fed by a binarizer)"
    details = "\n".join(f"  {n}: {r}" for n, r in report.unconverted_layers.items())
    raise BinarizationError(
        f"{len(report.binary_layers)} binary layers in the model but {report.bconv_ops} "
        f"LceBconv2d ops in the converted file; not binary after conversion: {names}.\n{details}\n"
        f"Float convs reading a binarizer: {report.float_convs_fed_by_binarizer or 'none'}. "
        f"Nothing was written to {path}. Pass verify=False to write the file anyway.",
        report,
    )


_FAILED_NODE = re.compile(r"Node number (\d+) \((\w+)\) failed to (\w+)")


def interpreter_failure(error, flatbuffer, path):
    """The message of a `ConverterError` for a file LCE's interpreter cannot allocate or
    run: the failing op and the tensors it writes (named after the Keras layers)."""
    text = " ".join(str(error).split())
    match = _FAILED_NODE.search(text)
    where = "an op TFLite does not name"
    if match:
        node, op, step = int(match.group(1)), match.group(2), match.group(3)
        graph = inspect.read_graph(flatbuffer)
        outputs = ([graph.tensors[i].name for i in graph.ops[node].outputs]
                   if node < len(graph.ops) else [])
        where = (f"op {op} (node {node}{', writing ' + ', '.join(outputs) if outputs else ''})"
                 f", which failed to {step}")
    return (f"LCE's interpreter cannot run the converted model: {where}. Interpreter message: "
            f"{text[-400:]} Nothing was written to {path}. The layer named in the tensor is "
            "the one to change (LCE.md lists what converts); pass verify=False to write the "
            "file unchecked.")


def _verify_into(report, export_model, binary_layers, sample, atol, path):
    """Runs `verify.verify` and raises `VerificationError` on a real difference."""
    if int(np.__version__.split(".")[0]) >= 2:
        raise RuntimeError(
            "LCE 0.16's Python interpreter reads every tensor as 0 bytes under numpy 2; install "
            "numpy<2 to verify, or pass verify=False."
        )
    enforce = atol is not None or report.int8 == "off"
    report.atol = float(verification.ATOL if atol is None else atol)
    report.rtol = verification.RTOL
    report.num_samples = int(sample.shape[0])
    try:
        result = verification.verify(
            export_model, report.flatbuffer, sample, binary_layers, atol=report.atol
        )
    except RuntimeError as error:  # the interpreter cannot allocate or run the file
        raise ConverterError(interpreter_failure(error, report.flatbuffer, path), report) from None
    report.max_abs_diff = result.max_abs_diff
    report.mismatch_fraction = result.mismatch_fraction
    report.top1_agreement = result.top1_agreement
    report.forced_max_abs_diff = result.forced_max_abs_diff
    report.flipped_bits = result.flipped_bits
    report.first_flip = result.first_flip
    report.max_flip_margin = result.max_flip_margin
    if report.first_flip is not None and result.failure is None:
        report.notes.append(
            f"{sum(result.flipped_bits.values())} binarized value(s) that are zero up to float "
            f"rounding took the other sign in LCE (first in {report.first_flip[0]}); free "
            f"outputs then differ by up to {result.max_abs_diff:.3g}"
            + ("" if result.top1_agreement is None
               else f", top-1 agreement {100 * result.top1_agreement:.0f}%")
            + ". A binary network amplifies such flips; with LCE's bits forced into Keras "
            "every layer matches."
        )
    if report.int8 == "qat":
        failed = atol is not None and result.max_abs_diff > atol
        failure = f"outputs differ by up to {result.max_abs_diff:.3g} > atol {atol}"
    else:
        failed, failure = enforce and result.failure is not None, result.failure
    if failed:
        raise VerificationError(
            f"LCE interpreter outputs differ from Keras: {failure} (free max |diff| = "
            f"{report.max_abs_diff:.3g}, {100 * report.mismatch_fraction:.2f}% of output values "
            f"outside the tolerance). Nothing was written to {path}.",
            report,
        )


def lce_convert(
    model,
    path,
    *,
    sample=None,
    int8=False,
    target="arm",
    verify=True,
    atol=None,
    num_samples=4,
    int8_range=(-3.0, 3.0),
    timeout=None,
    seed=0,
):
    """Converts a Keras 3 model to an LCE flatbuffer, checks it, and writes `path`.

    Steps: check `path` is writable; rebuild a mixed-precision model in float32; export a
    batch-1 float32 SavedModel in inference mode, with quantized kernels as constants
    (TensorFlow does not constant-fold kernels of 64 MiB and more); convert in a child
    process; audit (#`LceBconv2d` = #binary layers, no float conv reading `LceDequantize`,
    LCE.md section 3); verify layer by layer; write the file atomically, only if every check
    passed. Verification passes when every bit LCE binarizes differently from Keras sits at
    |x| <= 1e-4 * max|x| of that layer's input (float rounding, which a deep binary network
    amplifies: reported, not failed), and outputs match within `atol + 1e-5 * max|y|` once
    LCE's bits are forced into Keras; it fails on a flip far from zero, naming the layer, or
    on a float-part difference (`kerasbnn.export.verify` gives the rule and why).

    int8: inputs and outputs stay float32. A model with FakeQuant ranges becomes a real int8
    model (`report.int8 == "qat"`), compared and held to `atol` only when it is given.
    Without FakeQuant, `int8=True` assumes `int8_range` for every tensor ("dummy-range", a
    UserWarning): for latency only, outputs not compared (LCE.md section 6).

    Args:
        model: a `keras.Model` with one input of shape (H, W, C).
        path: destination `.tflite` file; an existing file is replaced only on success.
        sample: inputs for the comparison, shape (N, H, W, C); random normal if None.
        int8, int8_range: see above (`int8_range` is used in dummy-range mode only).
        target: "arm" (also runs on x86 with portable kernels) or "xcore".
        verify: if False, only audit and report; the file is written regardless.
        atol: absolute output tolerance; None: 1e-3 (not enforced for "qat" files).
        num_samples: size of the random sample when `sample` is None.
        timeout: seconds allowed to the converter process, or None.
        seed: seed of the random sample.

    Returns:
        A `ConversionReport` (`print(report)` for a summary, `report.to_dict()` for JSON).

    Raises:
        ValueError, PermissionError: bad arguments, model or `path`, before converting.
        ConverterError: the converter failed or crashed, or LCE's interpreter cannot
            allocate or run the file (the op and the tensors it writes named).
        BinarizationError: binary layers that did not become `LceBconv2d` (named).
        VerificationError: a real difference between Keras and LCE (the layer named).

    Example: `print(kerasbnn.lce_convert(model, "model.tflite", sample=x_test[:8]))`
    """
    _check_arguments(target, int8, atol, num_samples, int8_range)
    path = check_writable(path)
    shape = _input_shape(model)
    sample = _prepare_sample(sample, shape, num_samples, seed) if verify else None
    export_model = float32_model(model)
    binary_layers = [
        layer for layer in iter_layers(export_model) if getattr(layer, "is_binary", False)
    ]
    report = ConversionReport(target=target, binary_layers=[layer.name for layer in binary_layers])
    if export_model is not model:
        report.notes.append("mixed precision: a float32 rebuild with the same weights was used.")
    flatbuffer = _export_and_convert(
        model, export_model, shape, report, int8=int8, int8_range=int8_range, verify=verify,
        atol=atol, timeout=timeout,
    )
    _audit_into(report, flatbuffer, binary_layers)
    if verify:
        if not report.binarization_ok:
            _raise_binarization_error(report, path)
        if report.int8 != "dummy-range":
            _verify_into(report, export_model, binary_layers, sample, atol, path)
    _write_atomically(path, flatbuffer)
    report.path = path
    return report

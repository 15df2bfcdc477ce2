"""Keras 3 model -> Larq Compute Engine flatbuffer, audited and verified.

The path is the one LCE.md (sections 0-4) measured: `model.export(..., format="tf_saved_model")`
with a batch-1 float32 signature, then LCE's converter (the native function behind
`larq_compute_engine.convert_saved_model`) in a separate process
(`kerasbnn.export.converter`), then an audit of the ops in the file against the model's
binary layers (`kerasbnn.export.audit`), then a layer-by-layer verification of the LCE
interpreter against Keras (`kerasbnn.export.verify`). The `.tflite` file is written last,
atomically, and only when everything that was asked for passed (`kerasbnn.export.files`).
This module holds `lce_convert`, the checks of its arguments and the float32 rebuild of a
mixed-precision model.
"""

import re
import tempfile
import warnings

import keras
import numpy as np

from kerasbnn.export import inspect
from kerasbnn.export import verify as verification
from kerasbnn.export.audit import audit_into, raise_binarization_error
from kerasbnn.export.converter import TARGETS, contains_fake_quant, convert_saved_model
from kerasbnn.export.files import check_writable, write_atomically
from kerasbnn.export.report import (
    BinarizationError,
    ConversionReport,
    ConverterError,
    ExportError,
    VerificationError,
)
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
        if contains_fake_quant(saved_model_dir):
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


def _start_report(model, export_model, target):
    """A `ConversionReport` naming the binary layers of `export_model` (the float32 model
    converted), and those layers."""
    binary_layers = [
        layer for layer in iter_layers(export_model) if getattr(layer, "is_binary", False)
    ]
    report = ConversionReport(target=target, binary_layers=[layer.name for layer in binary_layers])
    if export_model is not model:
        report.notes.append("mixed precision: a float32 rebuild with the same weights was used.")
    return report, binary_layers


def _check_converted(report, export_model, binary_layers, sample, atol, path):
    """With `verify=True`: raises unless the audit passed and, outside dummy-range int8, LCE
    computes what Keras computes on `sample`."""
    if not report.binarization_ok:
        raise_binarization_error(report, path)
    if report.int8 != "dummy-range":
        _verify_into(report, export_model, binary_layers, sample, atol, path)


def lce_convert(model, path, *, sample=None, int8=False, target="arm", verify=True, atol=None,
                num_samples=4, int8_range=(-3.0, 3.0), timeout=None, seed=0):
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
    report, binary_layers = _start_report(model, export_model, target)
    flatbuffer = _export_and_convert(
        model, export_model, shape, report, int8=int8, int8_range=int8_range, verify=verify,
        atol=atol, timeout=timeout,
    )
    audit_into(report, flatbuffer, binary_layers)
    if verify:
        _check_converted(report, export_model, binary_layers, sample, atol, path)
    write_atomically(path, flatbuffer)
    report.path = path
    return report

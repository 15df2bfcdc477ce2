"""LCE's converter on a TF SavedModel, run in a child process, and what the SavedModel holds.

The converter is native code: an LLVM abort or a segfault kills the process it runs in. Running
it in a child (`kerasbnn/export/_worker.py`) turns such a crash into a `ConverterError` and
leaves the caller's Python session alive.
"""

import json
import os
import re
import signal
import subprocess
import sys
import tempfile

from kerasbnn.export.report import ConverterError

__all__ = ["convert_saved_model"]

TARGETS = ("arm", "xcore")
# The worker runs as a file, not `-m kerasbnn...`: importing the package would import Keras
# and TensorFlow in the child for nothing (see _worker.py). Dropping sys.path[0] keeps the
# caller's working directory from shadowing modules.
_WORKER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_worker.py")
_WORKER_BOOTSTRAP = (
    "import sys, runpy; del sys.path[0]; sys.argv = sys.argv[1:]; "
    "runpy.run_path(sys.argv[0], run_name='__main__')"
)
_LOG_LINE = re.compile(r"^(WARNING: All log messages before absl|[WIE]\d{4} \d\d:\d\d:\d\d)")


def _stderr_tail(stderr, lines=15):
    kept = [line for line in stderr.splitlines() if line.strip() and not _LOG_LINE.match(line)]
    return "\n".join(kept[-lines:])


def _worker_env():
    """The caller's environment, with TensorFlow's C++ logging quiet unless asked for."""
    env = dict(os.environ)
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    # The converter needs no Keras; a legacy-Keras switch inherited from a larq session
    # would only slow the child's imports.
    env.pop("TF_USE_LEGACY_KERAS", None)
    return env


def _raise_for_failure(result, output, saved_model_dir):
    """Raises `ConverterError` if the worker was killed, failed, or wrote no `output`."""
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
        try:
            result = subprocess.run(
                [sys.executable, "-c", _WORKER_BOOTSTRAP, _WORKER, json.dumps(options)],
                capture_output=True,
                text=True,
                timeout=timeout,
                env=_worker_env(),
            )
        except subprocess.TimeoutExpired as error:
            raise ConverterError(f"The LCE converter did not finish within {timeout} s.") from error
        _raise_for_failure(result, output, saved_model_dir)
        with open(output, "rb") as f:
            return f.read()


def contains_fake_quant(saved_model_dir):
    """True if the SavedModel's graph (its functions included) has a FakeQuant op: the model
    was trained with quantization ranges and converts to a real int8 model."""
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

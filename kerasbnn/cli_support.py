"""What the command line needs before TensorFlow loads: argument types whose range errors
are usage errors (exit 2), a quiet first import of TensorFlow, the check that a .keras file
is a complete zip archive, and the benchmark's measurement in a child process.

Nothing here imports TensorFlow at module level: `kerasbnn --help` and usage errors are
answered without it.
"""

import argparse
import json
import math
import os
import re
import sys
import tempfile
import zipfile


def integer_in(low, high=None):
    """argparse type: an integer in `[low, high]` (`high` None: no upper bound)."""

    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
        if value < low or (high is not None and value > high):
            bound = f"at least {low}" if high is None else f"an integer in [{low}, {high}]"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {value}")
        return value

    return parse


def non_negative_float(text):
    """argparse type: a finite number >= 0 (a tolerance)."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value) or value < 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text}")
    return value


# What TensorFlow's native libraries print while they load, at each TF_CPP_MIN_LOG_LEVEL:
# absl's "before InitializeLog" notice, then INFO (I), WARNING (W), ERROR (E) lines, and the
# second line of the CPU-feature notice.
_NATIVE_LINE = re.compile(r"^([IWE])\d{4} ")
_NATIVE_NOTICES = ("WARNING: All log messages before absl::InitializeLog()",
                   "To enable the following instructions:")


def _kept(line, level):
    if line.startswith(_NATIVE_NOTICES):
        return False
    match = _NATIVE_LINE.match(line)
    return match is None or "IWE".index(match.group(1)) >= level


def import_tensorflow_quietly():
    """Imports Keras, and so TensorFlow, without the log lines its native libraries print
    while loading below `TF_CPP_MIN_LOG_LEVEL` (set to 3 by the command line unless set).

    TensorFlow 2.21 prints its oneDNN and CUDA notices through absl before it reads
    `TF_CPP_MIN_LOG_LEVEL`, so the variable alone does not quiet them: stderr (file
    descriptor 2) goes to a temporary file during the import, and every line of it that is
    not such a notice (a Python warning, a native error) is written back to stderr.
    With `TF_CPP_MIN_LOG_LEVEL=0` nothing is filtered.
    """
    level = os.environ.get("TF_CPP_MIN_LOG_LEVEL", "0")
    level = min(int(level), 3) if level.isdigit() else 0
    if level == 0 or "keras" in sys.modules:
        import keras  # noqa: F401
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import keras  # noqa: F401
        finally:
            sys.stderr.flush()
            os.dup2(saved, 2)
            os.close(saved)
            captured.seek(0)
            lines = captured.read().decode(errors="replace").splitlines()
            kept = [line for line in lines if _kept(line, level)]
            if kept:
                print("\n".join(kept), file=sys.stderr)


def complete_zip(path):
    """True if `path` is a zip archive whose members all read back (CRC checked)."""
    try:
        with zipfile.ZipFile(path) as archive:
            return archive.testzip() is None
    except (zipfile.BadZipFile, OSError, EOFError):
        return False


# The benchmark's child process: LCE's interpreter crashes (SIGSEGV) on some corrupt files.
_MEASURE = """
import json, sys
from kerasbnn.export import measure_latency
a = json.loads(sys.argv[1])
try:
    ms = measure_latency(a["path"], num_threads=a["threads"], runs=a["runs"],
                         use_xnnpack=a["xnnpack"])
    print(json.dumps({"ms": ms}))
except (RuntimeError, ValueError) as error:
    print(json.dumps({"error": str(error)}))
"""


def measure_in_child(args):
    """`(ms, None)` or `(None, why)`: `measure_latency` in a child process, so that a file
    that crashes the interpreter becomes a message."""
    import signal
    import subprocess

    import kerasbnn

    env = dict(os.environ)
    root = os.path.dirname(os.path.dirname(os.path.abspath(kerasbnn.__file__)))
    env["PYTHONPATH"] = os.pathsep.join(filter(None, (root, env.get("PYTHONPATH"))))
    options = {"path": args.input, "threads": args.threads, "runs": args.runs,
               "xnnpack": args.xnnpack}
    done = subprocess.run([sys.executable, "-c", _MEASURE, json.dumps(options)], env=env,
                          capture_output=True, text=True)
    # TFLite may print to stdout too (e.g. "INFO: Created ... XNNPACK delegate"), in any order.
    results = [json.loads(line) for line in done.stdout.splitlines() if line.startswith('{"')]
    if done.returncode == 0 and results:
        return results[-1].get("ms"), results[-1].get("error")
    if done.returncode < 0:
        errors = [line for line in done.stderr.splitlines() if line.startswith("ERROR")]
        detail = f": {errors[-1]}" if errors else ""
        crash = signal.Signals(-done.returncode).name
        return None, f"the interpreter crashed on it ({crash}{detail})"
    return None, (done.stderr.strip().splitlines() or ["the measurement failed"])[-1]

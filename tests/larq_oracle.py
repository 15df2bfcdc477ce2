"""Run a snippet under larq 0.14 in a subprocess and get NumPy arrays back.

larq only imports with `TF_USE_LEGACY_KERAS=1` set before TensorFlow loads (it needs the
legacy Keras 2 package), which cannot happen in a process that already runs Keras 3. So the
oracle is a fresh interpreter: inputs go in through an .npz, the snippet fills the dict
`outputs`, and the arrays come back through another .npz. Each call costs one TensorFlow
import (~10 s), so batch everything a test module needs into one call.

Usage (tests/ is not a package and pytest runs with --import-mode=importlib, so a test
module loads this file by path):

    spec = importlib.util.spec_from_file_location("larq_oracle", TESTS_DIR / "larq_oracle.py")
    oracle = importlib.util.module_from_spec(spec); spec.loader.exec_module(oracle)
    if not oracle.available(): pytest.skip(...)
    arrays = oracle.run("outputs['y'] = larq.math.sign(tf.constant(inputs['x'])).numpy()",
                        {"x": x}, tmp_dir)
"""

import importlib.util
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np

_TEMPLATE = """\
import os
os.environ["TF_USE_LEGACY_KERAS"] = "1"
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
import numpy as np
import tensorflow as tf
import larq

with np.load({inputs!r}) as _data:
    inputs = {{key: _data[key] for key in _data.files}}
outputs = {{}}
{snippet}
np.savez({outputs!r}, **{{key: np.asarray(value) for key, value in outputs.items()}})
"""


def available():
    """True when larq is installed (checked without importing it)."""
    return importlib.util.find_spec("larq") is not None


def run(snippet, inputs, workdir, timeout=600):
    """Executes `snippet` under larq and returns the arrays it stored in `outputs`.

    Args:
        snippet: Python source run at module level; it sees `inputs` (dict of arrays),
            `outputs` (dict to fill), `np`, `tf` (tf.keras is legacy Keras 2) and `larq`.
        inputs: dict of NumPy arrays passed to the snippet.
        workdir: directory for the exchange files and the script.
        timeout: seconds before the subprocess is killed.

    Returns:
        dict of NumPy arrays, the snippet's `outputs`.

    Raises:
        RuntimeError: when the subprocess fails; the message holds the end of its stderr.
    """
    workdir = Path(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    in_path, out_path = workdir / "larq_in.npz", workdir / "larq_out.npz"
    script = workdir / "larq_run.py"
    np.savez(in_path, **inputs)
    script.write_text(
        _TEMPLATE.format(
            inputs=str(in_path), outputs=str(out_path), snippet=textwrap.dedent(snippet)
        )
    )
    env = {key: value for key, value in os.environ.items() if key != "KERAS_BACKEND"}
    env["TF_USE_LEGACY_KERAS"] = "1"
    env.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    result = subprocess.run(
        [sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=timeout
    )
    if result.returncode != 0:
        raise RuntimeError(
            f"larq subprocess failed ({result.returncode}):\n{result.stderr[-4000:]}"
        )
    with np.load(out_path) as data:
        return {key: data[key] for key in data.files}


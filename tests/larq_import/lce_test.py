"""An imported QuickNet converts with LCE to the same ops as larq's own model.

larq's side converts in a larq subprocess with `larq_compute_engine.convert_keras_model`;
the imported model goes through `kerasbnn.lce_convert`, which also checks the LCE
interpreter's outputs against Keras layer by layer.
"""

import importlib.util
from pathlib import Path

import numpy as np
import pytest

import kerasbnn
from kerasbnn import larq_import
from kerasbnn.export import inspect
from kerasbnn.larq_import import files

pytestmark = [pytest.mark.larq, pytest.mark.tflite, pytest.mark.slow]

TESTS_DIR = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("larq_oracle", TESTS_DIR / "larq_oracle.py")
oracle = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(oracle)

CONVERT = """
import larq_compute_engine as lce
path = os.path.join(WORKDIR, FILES["quicknet"])
with open(os.path.join(WORKDIR, "quicknet_larq.tflite"), "wb") as f:
    f.write(lce.convert_keras_model(child.load_model(path, tf.keras)))
"""


def test_quicknet_converts_to_larqs_ops(tmp_path):
    pytest.importorskip("larq_compute_engine")
    if not oracle.available():
        pytest.skip("larq and tf-keras are not installed (pip install -e '.[larq]')")
    child = Path(larq_import.__file__).with_name("_child.py")
    root = Path(kerasbnn.__file__).resolve().parents[1]
    preamble = (
        f"WORKDIR = {str(tmp_path)!r}\nCHILD = {str(child)!r}\nKERASBNN_ROOT = {str(root)!r}\n"
        "BATCH = 4\n"
    )
    script = preamble + Path(__file__).with_name("larq_models.py").read_text() + CONVERT
    reference = oracle.run(script, {}, tmp_path)
    index = list(reference["reader/names"]).index("quicknet")
    model = larq_import.build(*files.load_result(str(tmp_path / "reader" / str(index)), "quicknet"))
    path = tmp_path / "quicknet.tflite"
    report = kerasbnn.lce_convert(model, path, sample=reference["quicknet/x"])
    larq_ops = inspect.op_counts(str(tmp_path / "quicknet_larq.tflite"))
    assert inspect.op_counts(str(tmp_path / "quicknet.tflite")) == larq_ops
    assert larq_ops["LceBconv2d"] == 2 and report.bconv_ops == 2
    assert np.isfinite(report.max_abs_diff) and report.max_abs_diff < 1e-3

"""benchmarks/rprelu_latency.py end to end on tiny settings (no timed assertion)."""

import json
import re

import pytest

from kerasbnn.layers import RPReLU
from tests.helpers import benchmark

TINY = ["--float-widths", "0.25", "--binary-widths", "0.25", "--runs", "2", "--rounds", "1"]


@pytest.mark.tflite
def test_rprelu_latency_converts_both_forms_and_times_them_side_by_side(tmp_path):
    pytest.importorskip("larq_compute_engine")
    module = benchmark("rprelu_latency")
    lines = []
    record = module.main([*TINY, "--json", str(tmp_path / "r.json")], print_fn=lines.append)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["line"] == record["line"] == lines[-1]
    assert re.fullmatch(r"RPReLU: the where form takes \d+\.\d\dx the relu form's latency "
                        r"\(binary w0\.25 reactnet, LCE x86 portable kernels\)", lines[-1])
    assert set(saved["models"]) == {"float w0.25 reactnet", "binary w0.25 reactnet"}
    for forms in saved["models"].values():
        where, relu = forms["where"]["op_counts"], forms["relu"]["op_counts"]
        assert where["SELECT"] == where["GREATER"] == 18 and relu["RELU"] == 36
        assert not {"SELECT", "SELECT_V2", "GREATER"} & set(relu)
        assert forms["where"]["max_abs_diff"] < 1e-3 and forms["relu"]["max_abs_diff"] < 1e-3
        assert len(forms["relu"]["rounds_ms"]) == 1
        assert forms["speedup"] == pytest.approx(
            forms["where"]["latency_ms"] / forms["relu"]["latency_ms"])


def test_rprelu_form_swaps_the_call_and_always_restores_it():
    module = benchmark("rprelu_latency")
    original = RPReLU.call
    with module.rprelu_form("relu"):
        assert RPReLU.call is original
    with pytest.raises(RuntimeError, match="inside"):
        with module.rprelu_form("where"):
            assert RPReLU.call is module._where_call
            raise RuntimeError("inside")
    assert RPReLU.call is original

"""benchmarks/recipe_latency.py end to end on tiny settings (no timed assertion)."""

import json
import re

import pytest

from tests.helpers import benchmark

TINY = ["--float-widths", "0.25", "--binary-widths", "0.25", "--blocks", "reactnet",
        "--runs", "2", "--rounds", "1"]


def test_recipe_latency_times_the_demo_networks_and_reuses_their_files(tmp_path):
    module = benchmark("recipe_latency")
    lines, out = [], tmp_path / "tflite"
    record = module.main([*TINY, "--out", str(out), "--json", str(tmp_path / "r.json")],
                         print_fn=lines.append)
    saved = json.loads((tmp_path / "r.json").read_text())
    assert saved["line"] == record["line"] == lines[-1]
    assert re.fullmatch(r"binary (w0\.25 reactnet: \d+\.\d\dx the float w0\.25's latency, "
                        r"|reactnet: no width is as fast as the float w0\.25 ).*"
                        r"LCE x86 portable kernels\)", lines[-1]), lines[-1]
    models = saved["models"]
    binary, floating = models["binary w0.25 reactnet"], models["float w0.25 reactnet"]
    assert binary["bconv_ops"] == binary["binary_layers"] == 18 and floating["bconv_ops"] == 0
    assert binary["size_bytes"] < floating["size_bytes"]
    ratio = saved["ratios"]["binary w0.25 reactnet"]["float w0.25 reactnet"]
    assert ratio["latency"] == pytest.approx(binary["latency_ms"] / floating["latency_ms"])
    again = []
    module.main([*TINY, "--out", str(out)], print_fn=again.append)
    assert sum("reusing" in line for line in again) == 2
    assert not any("LCE conversion report" in line for line in again)


def test_recipe_latency_refuses_bad_widths(capsys):
    module = benchmark("recipe_latency")
    for bad in ("0.5,x", "0,1", ""):
        with pytest.raises(SystemExit):
            module.parse_args(["--binary-widths", bad])
        assert "--binary-widths" in capsys.readouterr().err

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


def test_recipe_latency_names_the_widest_binary_student_not_slower_than_the_float_one():
    module = benchmark("recipe_latency")
    args = module.parse_args(["--float-widths", "0.5,1", "--binary-widths", "0.5,1,2",
                              "--blocks", "reactnet"])
    latency = {0.5: 0.8, 1.0: 1.0, 2.0: 1.7}  # binary / float w0.5, the first float width
    ratio = {module.model_key("binary", width, "reactnet"): {
        "float w0.5 reactnet": {"latency": value, "size": value / 4},
        "float w1.0 reactnet": {"latency": value / 2, "size": value / 16}}
        for width, value in latency.items()}
    assert module.verdict("reactnet", args, ratio) == (
        "binary w1.0 reactnet: 1.00x the float w0.5's latency, 0.25x its size "
        "(LCE x86 portable kernels)")
    for values in ratio.values():
        values["float w0.5 reactnet"]["latency"] += 1
    assert module.verdict("reactnet", args, ratio).startswith(
        "binary reactnet: no width is as fast as the float w0.5 (the narrowest, w0.5, takes "
        "1.80x its latency at 0.20x its size")

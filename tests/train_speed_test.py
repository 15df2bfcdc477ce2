"""benchmarks/train_speed.py runs end to end with --quick (no timed assertion)."""

import os
import pathlib
import re
import subprocess
import sys

import pytest

SCRIPT = pathlib.Path(__file__).resolve().parents[1] / "benchmarks" / "train_speed.py"


@pytest.mark.slow  # about a minute of training steps; the benchmark, end to end
def test_train_speed_quick_prints_the_ratios():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--quick", "--bits", "32", "2"],
        capture_output=True, text=True, timeout=900, env=env, cwd=SCRIPT.parent,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    lines = result.stdout.strip().splitlines()
    assert re.fullmatch(r"binary vs float \d+\.\d\dx", lines[-2]), lines[-2]
    assert re.fullmatch(r"mad overhead \d+\.\d\dx", lines[-1]), lines[-1]
    text = result.stdout
    assert "breakdown of the MAD step" in text
    assert re.search(r"cmtkd overhead \d+\.\d\dx: teachers' training \d+\.\d\dx, the rest", text)
    assert "teachers (inference fn, XLA)" in text

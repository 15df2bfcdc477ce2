"""The `kerasbnn` command line: convert and summary on saved .keras files, and its errors."""

import json
import os
import subprocess
import sys

import keras
import pytest

import kerasbnn

from kerasbnn import cli
from kerasbnn.layers import QuantConv2D

BINARY = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign")


@pytest.fixture
def saved_model(tmp_path):
    inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(32, 3, padding="same", name="stem")(inputs)
    x = QuantConv2D(32, 3, padding="same", pad_values=1.0, use_bias=False, name="bconv", **BINARY)(
        x
    )
    x = keras.layers.BatchNormalization()(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    model = keras.Model(inputs, keras.layers.Dense(3)(x))
    path = tmp_path / "model.keras"
    model.save(path)
    return path


@pytest.mark.tflite
def test_convert_end_to_end(saved_model, tmp_path, capsys):
    pytest.importorskip("larq_compute_engine")
    out = tmp_path / "model.tflite"
    assert cli.main(["convert", str(saved_model), str(out), "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["bconv_ops"] == 1 and report["binary_layers"] == ["bconv"]
    assert report["max_abs_diff"] < 1e-3 and report["path"] == str(out)
    assert out.stat().st_size == report["file_size"]


def test_convert_missing_input(tmp_path, capsys):
    assert (
        cli.main(["convert", str(tmp_path / "nope.keras"), str(tmp_path / "m.tflite")])
        == cli.EXIT_INPUT
    )
    assert "nope.keras' does not exist" in capsys.readouterr().err


def test_convert_unwritable_output(saved_model, tmp_path, capsys):
    target = tmp_path / "missing_folder" / "m.tflite"
    assert cli.main(["convert", str(saved_model), str(target)]) == cli.EXIT_OUTPUT
    assert "does not exist" in capsys.readouterr().err


def test_convert_input_that_is_not_a_model(tmp_path, capsys):
    bad = tmp_path / "bad.keras"
    bad.write_text("not a zip")
    assert cli.main(["convert", str(bad), str(tmp_path / "m.tflite")]) == cli.EXIT_INPUT
    assert "could not load" in capsys.readouterr().err
    assert not (tmp_path / "m.tflite").exists()


def test_summary_prints_table_and_json(saved_model, capsys):
    assert cli.main(["summary", str(saved_model)]) == 0
    assert "bconv" in capsys.readouterr().out
    assert cli.main(["summary", str(saved_model), "--json"]) == 0
    totals = json.loads(capsys.readouterr().out)
    assert {"params", "memory_mbit", "bops", "flops", "ops"} <= set(totals)
    assert totals["bops"] > 0


def test_usage_errors_exit_2(capsys):
    with pytest.raises(SystemExit) as info:
        cli.main(["frobnicate"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        cli.main(["convert", "only_one_path.keras"])
    assert info.value.code == 2
    assert "usage: kerasbnn convert" in capsys.readouterr().err


def test_console_script_entry_point():
    from importlib.metadata import entry_points

    (entry,) = [e for e in entry_points(group="console_scripts") if e.name == "kerasbnn"]
    assert entry.value == "kerasbnn.cli:main"
    assert entry.load() is cli.main


@pytest.mark.slow
def test_console_script_runs():
    script = os.path.join(os.path.dirname(sys.executable), "kerasbnn")
    result = subprocess.run([script, "--help"], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    assert "convert" in result.stdout and "summary" in result.stdout


def test_truncated_keras_file_says_corrupt_not_missing(saved_model, tmp_path, capsys):
    truncated = tmp_path / "truncated.keras"
    truncated.write_bytes(saved_model.read_bytes()[:2000])
    assert cli.main(["summary", str(truncated)]) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert "is corrupt or truncated" in err and "save the model again" in err
    assert "File not found" not in err
    assert cli.main(["convert", str(truncated), str(tmp_path / "m.tflite")]) == cli.EXIT_INPUT
    assert not (tmp_path / "m.tflite").exists()


@pytest.mark.parametrize("option", ["--runs", "--threads"])
def test_benchmark_rejects_non_positive_counts_as_usage_errors(tmp_path, capsys, option):
    with pytest.raises(SystemExit) as info:
        cli.main(["benchmark", str(tmp_path / "m.tflite"), option, "0"])
    assert info.value.code == 2
    assert f"argument {option}: must be at least 1, got 0" in capsys.readouterr().err


def test_benchmark_on_a_file_that_is_not_tflite(tmp_path, capsys):
    bad = tmp_path / "notes.tflite"
    bad.write_text("not a flatbuffer")
    assert cli.main(["benchmark", str(bad)]) == cli.EXIT_INPUT
    assert "is not a TFLite flatbuffer (no TFL3 identifier)" in capsys.readouterr().err


def test_benchmark_on_a_corrupt_tflite_that_crashes_the_interpreter(tmp_path, capsys):
    # A valid identifier over garbage: LCE 0.16's interpreter dies on it (SIGSEGV), in a child.
    bad = tmp_path / "corrupt.tflite"
    bad.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 4)
    assert cli.main(["benchmark", str(bad), "--runs", "1"]) == cli.EXIT_INPUT
    err = capsys.readouterr().err
    assert f"could not run {str(bad)!r}: " in err and "convert the model again" in err


@pytest.mark.tflite
def test_benchmark_measures_a_converted_model(saved_model, tmp_path, capsys):
    pytest.importorskip("larq_compute_engine")
    out = tmp_path / "model.tflite"
    assert cli.main(["convert", str(saved_model), str(out)]) == 0
    capsys.readouterr()
    assert cli.main(["benchmark", str(out), "--runs", "2", "--threads", "1"]) == cli.EXIT_OK
    assert f"{out}: median " in capsys.readouterr().out


# --- issue 33 §4: usage before TensorFlow, numeric flags, no silent default run -----------------

_NO_TENSORFLOW = """
import sys
from kerasbnn import cli
try:
    cli.main(sys.argv[1:])
except SystemExit as done:
    print("exit", done.code)
print("loaded:", sorted(m for m in sys.modules if m.split(".")[0] in ("tensorflow", "keras")))
"""


@pytest.mark.parametrize("argv, status", [
    (["--help"], 0), (["pipeline", "--help"], 0), (["distill", "--help"], 0),
    (["convert", "a.keras", "b.tflite", "--atol", "-1"], 2), (["pipeline"], 2),
])
def test_help_and_usage_errors_do_not_load_tensorflow(argv, status):
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", _NO_TENSORFLOW, *argv], env=env,
                          capture_output=True, text=True, timeout=120)
    assert f"exit {status}" in done.stdout, done.stderr
    assert "loaded: []" in done.stdout
    assert "I0000" not in done.stderr and "absl" not in done.stderr


def test_python_m_kerasbnn_answers_help(tmp_path):
    done = subprocess.run([sys.executable, "-m", "kerasbnn", "--help"], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "convert" in done.stdout and done.stderr == ""


def test_loading_tensorflow_prints_no_native_info_lines():
    script = ("import os, sys; os.environ['TF_CPP_MIN_LOG_LEVEL'] = '3'\n"
              "from kerasbnn import cli_support\n"
              "cli_support.import_tensorflow_quietly()\n"
              "import tensorflow as tf; print(int(tf.constant(2) + 1))\n"
              "print('native', file=sys.stderr)\n")
    env = {k: v for k, v in os.environ.items() if k != "TF_CPP_MIN_LOG_LEVEL"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "3", done.stderr
    assert done.stderr.strip() == "native"  # stderr is back, and nothing of the load is left


@pytest.mark.parametrize("argv, message", [
    (["convert", "a.keras", "b.tflite", "--atol", "-1"], "argument --atol: must be a finite"),
    (["convert", "a.keras", "b.tflite", "--atol", "nan"], "argument --atol: must be a finite"),
    (["convert", "a.keras", "b.tflite", "--atol", "x"], "argument --atol: 'x' is not a number"),
    (["train", "--defaults", "--bits", "0"], "argument --bits: must be an integer in [1, 32]"),
    (["benchmark", "m.tflite", "--runs", "-3"], "argument --runs: must be at least 1"),
])
def test_numeric_flags_out_of_range_are_usage_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as info:
        cli.main(argv)
    assert info.value.code == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize("command", [["pipeline"], ["train"], ["distill", "--method", "none"]])
def test_training_commands_refuse_to_start_a_default_run_silently(tmp_path, monkeypatch, capsys,
                                                                  command):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as info:
        cli.main(command)
    assert info.value.code == 2
    assert "--defaults" in capsys.readouterr().err
    assert not (tmp_path / "runs").exists()


def test_no_config_message_says_what_to_pass(capsys):
    with pytest.raises(SystemExit):
        cli.main(["pipeline"])
    err = capsys.readouterr().err
    assert "--config FILE" in err and "pass --defaults to run with every default value" in err


def test_an_empty_config_file_is_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    for text in ("", "# nothing yet\n"):
        (tmp_path / "run.yaml").write_text(text)
        assert cli.main(["pipeline", "--config", "run.yaml"]) == cli.EXIT_CONFIG
        err = capsys.readouterr().err
        assert "is empty" in err and "--defaults" in err
    assert not (tmp_path / "runs").exists()


def test_import_larq_checks_the_output_folder_before_importing(tmp_path, capsys):
    # /sys refuses new files even to root, where a chmod-ed folder would not
    target = "/sys/model.keras" if os.getuid() == 0 else str(tmp_path / "ro" / "model.keras")
    if os.getuid() != 0:
        (tmp_path / "ro").mkdir(mode=0o500)
    status = cli.main(["import-larq", str(tmp_path / "no_such_model.h5"), target])
    err = capsys.readouterr().err
    assert status == cli.EXIT_OUTPUT, err
    assert "is not writable" in err and "no_such_model" not in err


def test_import_kerasbnn_is_lazy_and_the_first_use_registers_every_class():
    script = ("import sys, kerasbnn\n"
              "assert 'tensorflow' not in sys.modules and 'keras' not in sys.modules\n"
              "from kerasbnn.layers import QuantConv2D\n"
              "import keras\n"
              "assert kerasbnn.summary is kerasbnn.utils.summary\n"
              "assert keras.saving.get_registered_object('kerasbnn>QuantConv2D') is QuantConv2D\n"
              "print(sorted(n for n in ('models', 'distill', 'export') if 'kerasbnn.' + n in "
              "sys.modules))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "['distill', 'export', 'models']"


def test_import_kerasbnn_after_keras_registers_every_class_for_load_model(tmp_path):
    path = tmp_path / "student.keras"
    kerasbnn.models.resnet20((28, 28, 1), 10, bits=1, width_multiplier=0.25).save(path)
    script = ("import sys, keras, kerasbnn\n"  # the usual order; no kerasbnn attribute used
              f"model = keras.saving.load_model({str(path)!r})\n"
              "print(any(type(l).__module__.startswith('kerasbnn.') for l in model.layers))\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "True"

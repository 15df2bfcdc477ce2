"""The example scripts (examples/*.py) in --smoke mode and the device scripts of tflite/.

The example scripts run in this process (they share the already imported TensorFlow), one
short epoch per phase on a few Fashion-MNIST batches or tfds mock ImageNet, eagerly. The
MAD CIFAR script is in the default run; the others are `slow`.
"""

import importlib.util
import json
import os
import pathlib
import subprocess

import keras
import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples"
TFLITE = ROOT / "tflite"


def load_script(path, monkeypatch=None):
    """Imports a script by path (examples/ and tflite/ are folders of scripts, not packages)."""
    if monkeypatch is not None:
        monkeypatch.syspath_prepend(str(path.parent))
    spec = importlib.util.spec_from_file_location(f"script_{path.parent.name}_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def example(monkeypatch):
    return lambda name: load_script(EXAMPLES / f"{name}.py", monkeypatch)


def _check_student(result, out):
    assert 0.0 <= result["accuracy"] <= 1.0
    assert result["keras"] == os.path.join(out, "student.keras")
    student = keras.models.load_model(result["keras"])  # safe_mode, no custom_objects
    x = np.random.default_rng(0).normal(size=(2, *student.input_shape[1:])).astype("float32")
    assert student(x, training=False).shape[0] == 2
    return student


# ----------------------------------------------------------------------- examples, --smoke


@pytest.mark.slow
def test_mad_cifar_smoke_trains_teachers_distils_and_saves(example, tmp_path):
    out = str(tmp_path / "mad")
    result = example("mad_cifar").main(["--smoke", "--out", out])
    student = _check_student(result, out)
    assert any(getattr(layer, "is_binary", False) for layer in student.layers)
    # Smoke mode keeps the first two teachers of 32/8/4/2 and trains each once.
    assert sorted(os.listdir(os.path.join(out, "teachers"))) == ["w32a32.keras", "w8a8.keras"]
    with open(os.path.join(out, "delta_history.csv")) as f:
        header = f.readline()
    assert "stage1_out" in header and result["tflite"] is None  # no conversion in smoke mode


def test_mad_cifar_paper_defaults_per_architecture(example):
    mad = example("mad_cifar")
    vgg = mad.parse(["--arch", "vgg_small", "--dataset", "cifar100"])
    assert (vgg.lr, vgg.weight_decay, vgg.feature_weight) == (0.01, 5e-4, 0.1)
    assert (vgg.epochs, vgg.batch_size) == (400, 128)
    resnet = mad.parse([])
    assert (resnet.lr, resnet.weight_decay, resnet.feature_weight) == (0.1, 1e-4, 0.2)
    assert resnet.teacher_bits == [32, 8, 4, 2]
    with pytest.raises(ValueError, match="--epochs must be at least 1"):
        mad.parse(["--epochs", "0"])


def test_step_schedule_divides_by_ten_at_scaled_epochs(example):
    common = example("mad_cifar")._common
    boundaries = common.scaled_boundaries((200, 300, 375), 400, 40)
    assert boundaries == [20.0, 30.0, 37.5]
    schedule = common.step_schedule(0.1, boundaries, steps=10)
    rates = [float(schedule(step)) for step in (0, 199, 201, 301, 376)]
    np.testing.assert_allclose(rates, [0.1, 0.1, 0.01, 0.001, 0.0001], rtol=1e-6)


@pytest.mark.slow
@pytest.mark.tflite
def test_mad_cifar_smoke_converts_and_local_benchmark_times_it(example, tmp_path):
    out = str(tmp_path / "mad")
    result = example("mad_cifar").main(["--smoke", "--convert", "--out", out])
    report = result["report"]
    assert report.bconv_ops == len(report.binary_layers) > 0
    local = load_script(TFLITE / "local_benchmark.py")
    json_path = tmp_path / "latency.json"
    assert local.main(["--tflite", result["tflite"], "--runs", "2", "--rounds", "1",
                       "--json", str(json_path)]) == 0
    timing = json.loads(json_path.read_text())["models"]["student.tflite"]
    assert timing["binary"] and timing["latency_ms"] > 0


@pytest.mark.slow
def test_mad_imagenet_bireal_smoke_on_mock_data(example, tmp_path):
    out = str(tmp_path / "bireal")
    result = example("mad_imagenet").main(["--smoke", "--out", out])
    student = _check_student(result, out)
    assert student.output_shape[-1] == 1000


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore:`shuffle=True` was passed")  # reactnet_two_step's own fit
def test_mad_imagenet_reactnet_two_step_smoke(example, tmp_path):
    out = str(tmp_path / "reactnet")
    _check_student(example("mad_imagenet").main(["--smoke", "--arch", "reactnet_resnet18",
                                                 "--out", out]), out)


@pytest.mark.slow
def test_cmtkd_smoke(example, tmp_path):
    out = str(tmp_path / "cmtkd")
    _check_student(example("cmtkd_cifar100").main(["--smoke", "--out", out]), out)
    assert os.path.exists(os.path.join(out, "pi_history.csv"))


def test_cmtkd_rejects_three_student_bit_values(example):
    with pytest.raises(ValueError, match="--student-bits takes one or two values"):
        example("cmtkd_cifar100").parse(["--student-bits", "1", "2", "3"])


@pytest.mark.slow
def test_progressive_smoke(example, tmp_path):
    out = str(tmp_path / "progressive")
    _check_student(example("progressive_cifar10").main(["--smoke", "--out", out]), out)
    assert os.path.exists(os.path.join(out, "teacher.keras"))


@pytest.mark.slow
def test_pkkd_smoke_trains_adder_student_and_cnn_teacher(example, tmp_path):
    out = str(tmp_path / "pkkd")
    result = example("pkkd_cifar10").main(["--smoke", "--out", out])
    student = _check_student(result, out)
    assert any(type(layer).__name__ == "AdderConv2D" for layer in student.layers)
    assert os.path.exists(os.path.join(out, "teacher.keras")) and result["tflite"] is None


def test_pkkd_rejects_a_negative_precise_bn(example):
    with pytest.raises(ValueError, match="--precise-bn must be 0 or more"):
        example("pkkd_cifar10").parse(["--precise-bn", "-1"])


def test_pkkd_frozen_teacher_needs_a_trained_one(example):
    with pytest.raises(ValueError, match="--frozen-teacher needs --teacher"):
        example("pkkd_cifar10").parse(["--frozen-teacher"])


# ------------------------------------------------------------------ tflite/device_benchmark.py

# SAMPLE, not captured from a device: the output of `lce_benchmark_model` (TFLite's
# benchmark_model with LCE's ops) for a 50-run benchmark, written from the format of
# tensorflow/lite/tools/benchmark/benchmark_model.cc (BenchmarkLoggingListener::OnBenchmarkEnd,
# the "count=... first=... curr=... min=... max=... avg=... std=..." statistics of each phase)
# and benchmark_tflite_model.cc (the parameter log), with invented timings.
SAMPLE_OUTPUT = """\
INFO: STARTING!
INFO: Log parameter values verbosely: [0]
INFO: Num threads: [1]
INFO: Graph: [/tmp/kerasbnn_benchmark/student.tflite]
INFO: #threads used for CPU inference: [1]
INFO: Loaded model /tmp/kerasbnn_benchmark/student.tflite
INFO: The input model file size (MB): 4.20531
INFO: Initialized session in 12.687ms.
INFO: Running benchmark for at least 5 iterations and at least 0.5 seconds but terminate if exceeding 150 seconds.
INFO: count=22 first=27211 curr=22914 min=22800 max=27211 avg=23245.6 std=921 p5=22811 median=23010 p95=24012

INFO: Running benchmark for at least 50 iterations and at least 1 seconds but terminate if exceeding 150 seconds.
INFO: count=50 first=22987 curr=22901 min=22766 max=23542 avg=22938.4 std=141 p5=22780 median=22905 p95=23320

INFO: Inference timings in us: Init: 12687, First inference: 27211, Warmup (avg): 23245.6, Inference (avg): 22938.4
INFO: Note: as the benchmark tool itself affects memory footprint, the following is only APPROXIMATE to the actual memory footprint of the model at runtime. Take the information at your discretion.
INFO: Memory footprint delta from the start of the tool (MB): init=6.125 overall=11.5
"""

# SAMPLE of the older tools' summary line (TFLite 1.x-2.1 benchmark_model), invented timings.
SAMPLE_OUTPUT_OLD = """\
count=50 first=80660 curr=79400 min=79012 max=83121 avg=80111.2 std=812
Average inference timings in us: Warmup: 91471, Init: 4108, Inference: 80660.1
"""


@pytest.fixture
def device():
    return load_script(TFLITE / "device_benchmark.py")


def test_parse_reads_average_inference_time_in_ms(device):
    numbers = device.parse_benchmark_output(SAMPLE_OUTPUT)
    assert numbers["avg_ms"] == pytest.approx(22.9384)
    assert numbers["init_ms"] == pytest.approx(12.687)
    assert numbers["first_ms"] == pytest.approx(27.211)
    assert numbers["warmup_avg_ms"] == pytest.approx(23.2456)
    # The statistics come from the last (timed) phase, not the warm-up phase.
    assert numbers["count"] == 50 and numbers["median_ms"] == pytest.approx(22.905)
    assert numbers["std_ms"] == pytest.approx(0.141)


def test_parse_old_summary_and_statistics_only(device):
    old = device.parse_benchmark_output(SAMPLE_OUTPUT_OLD)
    assert old["avg_ms"] == pytest.approx(80.6601) and old["init_ms"] == pytest.approx(4.108)
    assert "median_ms" not in old
    # Cut off before the summary line: the last statistics line still gives the average.
    cut = SAMPLE_OUTPUT.split("INFO: Inference timings")[0]
    assert device.parse_benchmark_output(cut)["avg_ms"] == pytest.approx(22.9384)


def test_parse_without_timing_raises_with_output_tail(device):
    failed = "INFO: STARTING!\nERROR: Didn't find op for custom opcode 'LceBconv2d' version '1'\n"
    with pytest.raises(device.BenchmarkOutputError, match="LceBconv2d"):
        device.parse_benchmark_output(failed)


def _no_subprocess(*args, **kwargs):
    raise AssertionError(f"dry run executed a command: {args}")


def test_dry_run_pi_prints_scp_and_ssh_commands(device, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    lines = []
    status = device.main(["student.tflite", "float.tflite", "--target", "pi", "--host", "pi@rpi",
                          "--binary", "lce_benchmark_model_aarch64", "--threads", "4",
                          "--dry-run"], print_fn=lines.append)
    assert status == 0
    remote = "/tmp/kerasbnn_benchmark"
    assert lines[:3] == [
        f"ssh pi@rpi mkdir -p {remote}",
        f"scp lce_benchmark_model_aarch64 pi@rpi:{remote}/lce_benchmark_model",
        f"ssh pi@rpi chmod +x {remote}/lce_benchmark_model",
    ]
    assert lines[3] == f"scp student.tflite pi@rpi:{remote}/student.tflite"
    assert lines[4] == (
        f"ssh pi@rpi '{remote}/lce_benchmark_model --graph={remote}/student.tflite "
        "--num_threads=4 --num_runs=50 --warmup_runs=5'"
    )
    assert len(lines) == 7 and lines[6].startswith("ssh pi@rpi") and "float.tflite" in lines[6]


def test_dry_run_android_uses_adb_serial_and_data_local_tmp(device, monkeypatch):
    monkeypatch.setattr(subprocess, "run", _no_subprocess)
    lines = []
    device.main(["m.tflite", "--target", "android", "--serial", "R58M", "--xnnpack",
                 "--dry-run", "--extra", "--enable_op_profiling=true"], print_fn=lines.append)
    remote = "/data/local/tmp/kerasbnn_benchmark"
    # No --binary: the tool must already be on the device, nothing is pushed but the model.
    assert lines == [
        f"adb -s R58M shell mkdir -p {remote}",
        f"adb -s R58M push m.tflite {remote}/m.tflite",
        f"adb -s R58M shell '{remote}/lce_benchmark_model --graph={remote}/m.tflite --num_threads=1 "
        "--num_runs=50 --warmup_runs=5 --use_xnnpack=true --enable_op_profiling=true'",
    ]


@pytest.mark.parametrize(
    "argv, message",
    [
        (["m.tflite", "--target", "pi", "--dry-run"], "needs --host"),
        (["m.tflite", "--target", "android", "--host", "x", "--dry-run"], "use --serial"),
        (["m.keras", "--target", "android", "--dry-run"], "expected .tflite"),
        (["missing.tflite", "--target", "android"], "no such file"),
        (["m.tflite", "--target", "android", "--runs", "0", "--dry-run"], "--runs must be"),
    ],
)
def test_bad_arguments_exit_with_a_message(device, capsys, argv, message):
    with pytest.raises(SystemExit) as error:
        device.main(argv)
    assert error.value.code == 2 and message in capsys.readouterr().err


def test_run_collects_latency_from_each_model(device, monkeypatch, tmp_path):
    models = []
    for name in ("binary.tflite", "float.tflite"):
        (tmp_path / name).write_bytes(b"TFL3")
        models.append(str(tmp_path / name))
    executed = []

    def fake_run(command, **kwargs):
        executed.append(command)
        output = SAMPLE_OUTPUT if "lce_benchmark_model --graph" in command[-1] else ""
        return subprocess.CompletedProcess(command, 0, stdout=output, stderr="")

    monkeypatch.setattr(subprocess, "run", fake_run)
    lines = []
    json_path = tmp_path / "device.json"
    status = device.main([*models, "--target", "android", "--json", str(json_path)],
                         print_fn=lines.append)
    assert status == 0
    assert [c[1] for c in executed] == ["shell", "push", "shell", "push", "shell"]
    saved = json.loads(json_path.read_text())
    assert saved["models"][models[0]]["avg_ms"] == pytest.approx(22.9384)
    assert any(line.startswith("binary.tflite") and "22.94" in line for line in lines)


def test_run_reports_a_failing_command(device, monkeypatch, tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"TFL3")
    monkeypatch.setattr(subprocess, "run", lambda command, **kw: subprocess.CompletedProcess(
        command, 255, stdout="", stderr="ssh: connect to host rpi port 22: No route to host"))
    lines = []
    assert device.main([str(model), "--target", "pi", "--host", "pi@rpi"], print_fn=lines.append) == 1
    assert "No route to host" in lines[-1] and "exit status 255" in lines[-1]


@pytest.mark.slow
def test_bring_your_own_model_smoke_binarizes_distils_and_saves(example, tmp_path):
    out = str(tmp_path / "byom")
    result = example("bring_your_own_model").main(["--smoke", "--out", out])
    student = _check_student(result, out)
    assert sum(getattr(layer, "is_binary", False) for layer in student.layers) == 3
    assert set(result["accuracies"]) == {"float", "8-bit", "binary (no training)",
                                         "binary (distilled)"}

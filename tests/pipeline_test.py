"""The command line's training surface: config errors before training, resume, the whole pipeline."""

import gzip
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import keras
import numpy as np
import pytest

from kerasbnn import cli, config, export, models, pipeline, run_dir
from kerasbnn.run import convert as run_convert

TINY = [
    "data.train_limit=256", "data.val_limit=128", "data.batch_size=64",
    "teachers.bits=[32, 2]", "teachers.epochs=1", "teachers.float_epochs=1", "student.epochs=1",
    "benchmark.runs=2", "model.block=basic",  # test_pipeline_end_to_end runs the demo's block
    # the default: the demo sets 0 (MAD at the logits, cached), which the other methods refuse
    "distill.feature_weight=0.2",
]


#: cmtkd trains its teachers with the student: TINY's teachers.epochs would be refused.
CMTKD = ["--set", "teachers.epochs=2", "--set", "teachers.float_epochs=null"]  # cmtkd reads neither


def _args(tmp_path, *extra):
    return ["--config", "examples/configs/demo.yaml", "--set", f"run_dir={tmp_path / 'run'}",
            *[a for item in TINY for a in ("--set", item)], *extra]


def _touch(root, *paths):
    for path in paths:
        os.makedirs(os.path.dirname(os.path.join(root, path)), exist_ok=True)
        open(os.path.join(root, path), "w").close()


def _done(root, *paths):
    """Stand-ins of finished steps' artefacts that read back (`kerasbnn.resume.damage`): a
    `.keras` zip with its results JSON, a conversion result with its `.tflite` file."""
    import zipfile

    for path in paths:
        name = os.path.basename(path).rsplit(".", 1)[0]
        companion = {"teachers": f"results/teacher_{name}.json",
                     "students": f"results/student_{name}.json"}.get(os.path.dirname(path))
        if path.startswith("results/convert_"):
            companion = f"tflite/{name[len('convert_'):]}.tflite"
        for file in (path, companion):
            full = os.path.join(root, file)
            os.makedirs(os.path.dirname(full), exist_ok=True)
            if file.endswith(".keras"):
                with zipfile.ZipFile(full, "w") as archive:
                    archive.writestr("config.json", "{}")
            else:
                pathlib.Path(full).write_text("{}")


def _write_idx(path, array):
    header = b"\x00\x00\x08" + bytes([array.ndim]) + np.array(array.shape, ">i4").tobytes()
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


@pytest.fixture
def small_data(tmp_path, monkeypatch):
    """256 train and 128 test images of a synthetic Fashion-MNIST in idx files, and no tfds or
    network: returns their directory (`$KERASBNN_DATA_DIR`)."""
    from kerasbnn.data import base

    folder = tmp_path / "data"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 256), ("t10k", 128)):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (count, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", np.arange(count) % 10)
    monkeypatch.setenv("KERASBNN_DATA_DIR", str(folder))
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    monkeypatch.setattr(base, "host_reachable", lambda url, timeout=None: False)
    return folder


def test_unknown_key_fails_before_anything_is_written(tmp_path, capsys):
    status = cli.main(["pipeline", *_args(tmp_path), "--set", "student.epoch=3"])
    assert status == cli.EXIT_CONFIG
    assert "Unknown config key 'student.epoch'" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_missing_dataset_fails_before_training(tmp_path, monkeypatch, capsys):
    from kerasbnn.data import base

    monkeypatch.setenv("KERASBNN_DATA_DIR", str(tmp_path / "empty"))
    monkeypatch.setattr(base, "host_reachable", lambda url, timeout=None: False)
    monkeypatch.setenv("TFDS_DATA_DIR", str(tmp_path / "tfds"))
    status = cli.main(["train", *_args(tmp_path)])
    err = capsys.readouterr().err
    assert status == cli.EXIT_INPUT, err
    assert "dataset-fashion-mnist" in err
    assert not os.path.exists(tmp_path / "run")


def test_existing_run_needs_resume_and_the_same_config(tmp_path):
    values = config.load("examples/configs/demo.yaml", [f"run_dir={tmp_path}", *TINY])
    run_dir.open_run_dir(values, resume=False)
    with pytest.raises(run_dir.RunDirectoryError, match="--resume"):
        run_dir.open_run_dir(values, resume=False)
    run_dir.open_run_dir(values, resume=True)
    _done(tmp_path, "students/mad.keras")
    changed = config.load("examples/configs/demo.yaml", [f"run_dir={tmp_path}", *TINY, "distill.feature_weight=0.5"])
    with pytest.raises(run_dir.RunDirectoryError, match="distill.feature_weight 0.2 -> 0.5"):
        run_dir.open_run_dir(changed, resume=True)


@pytest.mark.slow
def test_pipeline_end_to_end(tmp_path):
    status = cli.main(["pipeline", *_args(tmp_path, "--set", "model.block=reactnet")])  # the demo's
    assert status == cli.EXIT_OK
    run = tmp_path / "run"
    report = (run / "report.md").read_text()
    assert "binary, mad" in report and "LceBconv2d" in report
    for name in ("accuracy.png", "delta_mad.png", "size_latency.png"):
        assert (run / "plots" / name).stat().st_size > 1000
    for name in ("float_teacher", "mad", "none"):
        assert (run / "tflite" / f"{name}.tflite").stat().st_size > 0
    student = keras.models.load_model(run / "students" / "mad.keras")
    assert student.output_shape == (None, 10)
    # A second call resumes: every artefact exists, so nothing retrains.
    start = time.perf_counter()
    assert cli.main(["pipeline", *_args(tmp_path), "--resume"]) == cli.EXIT_OK
    assert time.perf_counter() - start < 60


@pytest.mark.slow
def test_sigkill_then_resume_continues_from_last_epoch(tmp_path):
    args = [sys.executable, "-m", "kerasbnn.cli", "train", *_args(tmp_path),
            "--set", "teachers.float_epochs=3", "--bits", "32"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    log = tmp_path / "run" / "logs" / "teacher_w32a32.csv"
    deadline = time.time() + 300
    while time.time() < deadline and proc.poll() is None:
        if log.exists() and len(log.read_text().strip().splitlines()) >= 2:  # epoch 1 logged
            break
        time.sleep(0.2)
    assert proc.poll() is None, "training finished before it could be killed"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (tmp_path / "run" / "teachers" / "w32a32.keras").exists()
    done = subprocess.run([*args, "--resume"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-2000:]
    epochs = [row.split(",")[0] for row in log.read_text().strip().splitlines()[1:]]
    assert epochs == ["0", "1", "2"]
    keras.models.load_model(tmp_path / "run" / "teachers" / "w32a32.keras")


def test_method_options_pass_through_and_unknown_method_fails(tmp_path, capsys):
    status = cli.main(["distill", *_args(tmp_path), "--method", "progressive",
                       "--set", "distill.options={nonsense: 1}"])
    assert status == cli.EXIT_CONFIG
    assert "nonsense" in capsys.readouterr().err
    values = config.load("examples/configs/demo.yaml", ["distill.progressive={epochs_per_stage: 2}"])
    assert values.distill.sections == {"progressive": {"epochs_per_stage": 2}}
    assert config.from_dict(config.to_dict(values)) == values  # as config.yaml stores it
    assert config.to_dict(values)["distill"]["progressive"] == {"epochs_per_stage": 2}
    with pytest.raises(config.ConfigError, match="distill.options must be a mapping"):
        config.load(None, ["distill.options=3"])
    with pytest.raises(config.ConfigError, match="Unknown config key 'distill.sections'"):
        config.load(None, ["distill.sections={at: {p: 3}}"])
    with pytest.raises(ValueError, match="distill.method='magic' is unknown; valid: at, average"):
        pipeline._setup(config.load("examples/configs/demo.yaml", [*TINY, "distill.method=magic"]), False)


@pytest.mark.slow
def test_distill_cmtkd_from_the_command_line(tmp_path, capsys):
    status = cli.main(["distill", *_args(tmp_path), "--method", "cmtkd", *CMTKD,
                       "--set", "distill.cmtkd={student_bits: 2}",
                       "--set", "teachers.bits=[4, 8]"])
    assert status == cli.EXIT_OK, capsys.readouterr().err
    assert "student accuracy" in capsys.readouterr().out
    keras.models.load_model(tmp_path / "run" / "students" / "cmtkd.keras")


MIRRORED_SCRIPT = """
import sys
import tensorflow as tf
cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)
from kerasbnn import cli
sys.exit(cli.main(sys.argv[1:]))
"""


@pytest.mark.slow
def test_train_under_mirrored_strategy_on_two_logical_cpus(tmp_path):
    args = ["train", *_args(tmp_path), "--bits", "2", "--distribute", "mirrored",
            "--set", "data.train_limit=128", "--set", "data.val_limit=64",
            # 32 validation images: batches that split evenly between the replicas
            "--set", "data.val_split=0.25"]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, *args], env=env,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MirroredStrategy over 2 replicas" in done.stdout and "CPU:1" in done.stdout
    model = keras.models.load_model(tmp_path / "run" / "teachers" / "w2a2.keras")
    assert model.output_shape == (None, 10)
    assert config.load(str(tmp_path / "run" / "config.yaml")).distribute == "mirrored"


@pytest.mark.slow
@pytest.mark.parametrize("method", ["at", "progressive", "pkkd"])
def test_every_method_trains_under_mirrored_strategy(tmp_path, method):
    # The distillers' steps equal one device's (tests/distill/distribute_test.py); here the
    # pipeline runs the methods that once refused `distribute: mirrored`.
    # The library's defaults (the demo config sets teacher fields pkkd does not read); 32
    # validation images: batches that split evenly between the replicas.
    settings = [f"run_dir={tmp_path / 'run'}", "data.train_limit=128", "data.val_limit=64",
                "data.val_split=0.25", "data.batch_size=32", "student.epochs=1",
                *({"pkkd": ["distill.pkkd={blocks_per_stage: 1, width_multiplier: 0.25}"]}.get(
                    method, ["teachers.bits=[32]", "model.width_multiplier=0.25"]))]
    args = ["distill", "--defaults", "--method", method, "--distribute", "mirrored",
            *[a for item in settings for a in ("--set", item)]]
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    done = subprocess.run([sys.executable, "-c", MIRRORED_SCRIPT, *args], env=env,
                          capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "MirroredStrategy over 2 replicas" in done.stdout
    result = json.loads((tmp_path / "run" / "results" / f"student_{method}.json").read_text())
    assert 0.0 <= result["accuracy"] <= 1.0


@pytest.mark.parametrize(
    "override, message",
    [
        ("student.binary=foo", "student.binary='foo' is unknown; valid: dorefa, xnor"),
        ("distill.kl_weight=-1", "distill.kl_weight must be at least 0"),
        ("distill.temperature=0", "distill.temperature must be greater than 0"),
        ("distill.ce_weight=-0.5", "distill.ce_weight must be at least 0"),
        ("distill.feature_reduction=max", "Unknown distill.feature_reduction 'max'"),
        ("distill.temperature_squared=maybe", "temperature_squared"),
        ("distill.fusion=foo", "distill.fusion must be one of ('learned', 'average')"),
        ("teachers.quantizer=foo", "teachers.quantizer='foo' is unknown; valid: dorefa, hwgq, lsq"),
        ("teachers.bits=[32, 64]", "teachers.bits: bits must be an integer in [1, 32]"),
        ("teachers.bits=[2, 2]", "must list distinct bit widths"),
        ("teachers.epochs=-1", "teachers.epochs must be at least 1, got -1"),
        ("student.epochs=-2", "student.epochs must be at least 1, got -2"),
        ("teachers.learning_rate=-1", "teachers.learning_rate must be greater than 0"),
        ("data.train_limit=100000000", "data.train_limit=100000000 is more than the 60000 "
                                       "images of fashion_mnist's train split; set at most 60000"),
        ("data.val_limit=20000", "data.val_limit=20000 is more than the 10000 images"),
        ("data.batch_size=512", "data.batch_size=512 is more than the 230 training images"),
        ("model.arch=adder_resnet20",
         "model.arch='adder_resnet20' has no quantizer/binary/width_multiplier/block options"),
        ("distribute=cluster", "distribute='cluster' is unknown; valid: none, mirrored, multiworker"),
        ("model.block=bottleneck", "model.block='bottleneck': Unknown block 'bottleneck'"),
    ],
)
def test_config_errors_fail_before_anything_is_written(tmp_path, capsys, override, message):
    status = cli.main(["pipeline", *_args(tmp_path), "--set", override])
    err = capsys.readouterr().err
    assert status == cli.EXIT_CONFIG, err
    assert message in err and "Traceback" not in err
    assert not os.path.exists(tmp_path / "run")  # not even config.yaml


def test_a_block_for_a_builder_without_blocks_is_refused_before_anything_is_written(tmp_path,
                                                                                   capsys):
    status = cli.main(["pipeline", *_args(tmp_path), "--set", "model.arch=vgg_small",
                       "--set", "model.block=bireal"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_CONFIG, err
    assert "model.arch='vgg_small' has no" in err and "block" in err
    assert not os.path.exists(tmp_path / "run")


def test_train_bits_are_checked_before_anything_is_written(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:  # a usage error, as every numeric flag's
        cli.main(["train", *_args(tmp_path), "--bits", "64"])
    assert exit_info.value.code == 2
    assert "argument --bits: must be an integer in [1, 32], got 64" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_config_errors_on_resume_leave_the_run_untouched(tmp_path, capsys):
    values = config.load("examples/configs/demo.yaml", [f"run_dir={tmp_path / 'run'}", *TINY])
    run_dir.open_run_dir(values, resume=False)
    saved = (tmp_path / "run" / "config.yaml").read_text()
    status = cli.main(["pipeline", *_args(tmp_path), "--resume", "--set", "teachers.quantizer=foo"])
    assert status == cli.EXIT_CONFIG
    assert (tmp_path / "run" / "config.yaml").read_text() == saved


def test_the_config_is_checked_once_before_anything_is_written(tmp_path, monkeypatch):
    """`check_config` (every check of a run: fields, registries, the methods' sections and
    checks) runs once per run, before the run directory is opened."""
    seen = []
    check = pipeline.check_config

    class Opened(Exception):
        """Stops the run where it would first write."""

    def counted(values, **kwargs):
        seen.append(os.path.exists(tmp_path / "run"))
        return check(values, **kwargs)

    def opened(*args, **kwargs):
        raise Opened

    monkeypatch.setattr(pipeline, "check_config", counted)
    monkeypatch.setattr(pipeline, "open_run_dir", opened)
    values = config.load("examples/configs/demo.yaml", [
        f"run_dir={tmp_path / 'run'}", *TINY, "distill.compare=[none, at, progressive, mad]",
        "distill.at={p: 3}", "distill.progressive={block: basic}"])
    with pytest.raises(Opened):
        pipeline.run_compare(values)
    assert seen == [False]


def test_method_options_are_checked_before_anything_is_written(tmp_path, capsys):
    status = cli.main(["distill", *_args(tmp_path), "--method", "cmtkd",
                       "--set", "distill.cmtkd={student_bit: 2}", *CMTKD])
    assert status == cli.EXIT_CONFIG
    assert "Unknown config key 'distill.cmtkd.student_bit'. Did you mean " \
           "'student_bits'?" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_unwritable_run_dir_exits_4_before_anything_is_written(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    status = cli.main(["train", *_args(tmp_path), "--set", f"run_dir={blocker / 'run'}"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_OUTPUT, err
    assert f"{blocker} is a file, not a directory" in err and "--set run_dir=" in err
    if os.geteuid() != 0:  # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert cli.main(["train", *_args(tmp_path), "--set", f"run_dir={locked / 'run'}"]) == cli.EXIT_OUTPUT
        assert "is not writable" in capsys.readouterr().err


def test_truncated_idx_file_exits_3_naming_it(tmp_path, small_data, capsys):
    images = small_data / "train-images-idx3-ubyte.gz"
    images.write_bytes(images.read_bytes()[:5000])
    status = cli.main(["train", *_args(tmp_path), "--bits", "32"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_INPUT, err
    assert f"{images} is corrupt or truncated" in err and "download it again" in err
    assert "Traceback" not in err and not os.path.exists(tmp_path / "run")


def _plan_config(tmp_path, *overrides):
    return config.load("examples/configs/demo.yaml", [f"run_dir={tmp_path}", *TINY, *overrides])


def test_resume_keeps_what_a_change_leaves_valid_and_says_what_it_redoes(tmp_path):
    run_dir.open_run_dir(_plan_config(tmp_path), resume=False)
    _done(tmp_path, "teachers/w32a32.keras", "teachers/w2a2.keras",
           "results/convert_float_teacher.json")
    _touch(tmp_path, "backup/student_mad/state.npz")  # cut mid-training
    lines = []
    run_dir.open_run_dir(_plan_config(tmp_path, "convert.verify=false", "benchmark.runs=3",
                                        "student.epochs=4", "teachers.learning_rate=1e-3"),
                           resume=True, print_fn=lines.append)
    assert lines == [
        "[resume] reusing the finished steps: teacher w32a32, teacher w2a2",
        "[resume] student mad continues from its last finished epoch (backup/student_mad)",
        "[resume] redoing convert float_teacher (benchmark.runs 2 -> 3, convert.verify True -> False)",
        "[resume] teachers.learning_rate 0.005 -> 0.001: finished steps keep the weights they were "
        "trained with (their results/*.json record the rate); the steps still to train use the "
        "new value",
    ]
    assert not os.path.exists(tmp_path / "results" / "convert_float_teacher.json")  # redone next
    assert config.load(str(tmp_path / "config.yaml")).convert.verify is False


@pytest.mark.parametrize(
    "overrides, keys, removed",
    [
        (["teachers.epochs=3"], "teachers.epochs 1 -> 3", ["teachers/w32a32.keras", "students/mad.keras"]),
        (["student.epochs=3"], "student.epochs 1 -> 3", ["students/mad.keras", "results/convert_mad.json"]),
        (["seed=1", "model.arch=vgg_small"], "model.arch 'resnet20' -> 'vgg_small', seed 0 -> 1",
         ["teachers/w32a32.keras"]),
        (["student.binary=xnor"], "student.binary 'bireal' -> 'xnor'", ["backup/student_none"]),
        (["student.schedule=two_step"], "student.schedule 'one_step' -> 'two_step'",
         ["students/mad.keras", "backup/student_none"]),
    ],
)
def test_resume_refuses_changes_that_invalidate_finished_steps(tmp_path, overrides, keys, removed):
    run_dir.open_run_dir(_plan_config(tmp_path), resume=False)
    _done(tmp_path, "teachers/w32a32.keras", "students/mad.keras", "results/convert_mad.json")
    _touch(tmp_path, "backup/student_none/state.npz")
    saved = (tmp_path / "config.yaml").read_text()
    with pytest.raises(run_dir.RunDirectoryError) as info:
        run_dir.open_run_dir(_plan_config(tmp_path, *overrides), resume=True)
    message = str(info.value)
    assert f"--resume cannot apply {keys}" in message and "--set run_dir=runs/new" in message
    assert all(os.path.join(str(tmp_path), path) in message for path in removed)
    assert (tmp_path / "config.yaml").read_text() == saved


def test_late_config_error_lets_the_fixed_config_rerun_and_reuse_finished_steps(
        tmp_path, small_data, capsys):
    run = tmp_path / "run"
    run_dir.open_run_dir(_plan_config(run, "teachers.epochs=2", "teachers.float_epochs=null"), resume=False)
    _done(run, "teachers/w32a32.keras", "teachers/w2a2.keras")
    # Found only when the method builds its models: a value the distiller checks (from random
    # weights: the teacher files stand in for finished steps and hold no models).
    status = cli.main(["distill", *_args(tmp_path), "--method", "cmtkd", "--resume",
                       "--set", "distill.cmtkd={kl_weight: -1}", *CMTKD,
                       "--set", "student.init=random"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_CONFIG, err
    assert "distill.cmtkd: kl_weight must be at least 0.0" in err
    assert json.loads((run / "results" / "failed.json").read_text())["kind"] == "config"
    # The fixed config reruns without --resume (and with it), keeping the finished teachers.
    fixed = _plan_config(run, "teachers.epochs=2", "teachers.float_epochs=null", "distill.method=cmtkd",
                         "distill.cmtkd={student_bits: 2}", "student.init=random")
    lines = []
    run_dir.open_run_dir(fixed, resume=False, print_fn=lines.append)
    assert "stopped on a config error (distill.cmtkd: kl_weight must be" in lines[0]
    assert any("reusing the finished steps: teacher w32a32, teacher w2a2" in line for line in lines)
    assert not (run / "results" / "failed.json").exists()
    with pytest.raises(run_dir.RunDirectoryError, match="already holds a run"):
        run_dir.open_run_dir(fixed, resume=False)  # a run that did not fail on its config


def _save_tiny(path, binary=False):
    """A small model on Fashion-MNIST's inputs, standing for a trained teacher or student."""
    from kerasbnn.layers import QuantConv2D

    inputs = keras.Input((28, 28, 1))
    x = keras.layers.Conv2D(8, 3, strides=2, name="stem")(inputs)
    x = keras.layers.BatchNormalization()(x)
    quant = dict(input_quantizer="ste_sign", kernel_quantizer="ste_sign") if binary else {}
    x = QuantConv2D(8, 3, padding="same", pad_values=1.0, use_bias=False, **quant)(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    keras.Model(inputs, keras.layers.Dense(10)(x)).save(path)


def _finished_training(run, values):
    """A run directory whose training steps are done (the models are small stand-ins)."""
    run_dir.open_run_dir(values, resume=False)
    for bits in values.teachers.bits:
        _save_tiny(run / "teachers" / f"w{bits}a{bits}.keras")
        run_dir.RunDir(run).write_json(f"teacher_w{bits}a{bits}", {"accuracy": 0.5})
    for name in ("none", "mad"):
        _save_tiny(run / "students" / f"{name}.keras", binary=True)
        run_dir.RunDir(run).write_json(f"student_{name}", {"accuracy": 0.4})


@pytest.mark.tflite
def test_failed_verification_exits_6_and_resumes_without_verification(
        tmp_path, small_data, monkeypatch, capsys):
    run = tmp_path / "run"
    _finished_training(run, _plan_config(run))
    verify = []
    real_convert = run_convert.lce_convert

    def convert(model, path, **kwargs):  # as a failed comparison: LCE's own check is elsewhere
        verify.append(kwargs["verify"])
        if kwargs["verify"]:
            raise export.VerificationError("max |Keras - LCE| = 0.63 > atol 0.001")
        return real_convert(model, path, **kwargs)

    monkeypatch.setattr(run_convert, "lce_convert", convert)
    status = cli.main(["pipeline", *_args(tmp_path), "--resume"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_VERIFY, err
    assert "0.63 > atol 0.001" in err and "--resume --set convert.verify=false" in err
    assert "Traceback" not in err
    for path in ("teachers/w32a32.keras", "teachers/w2a2.keras", "students/mad.keras",
                 "students/none.keras"):
        assert (run / path).exists()
    status = cli.main(["pipeline", *_args(tmp_path), "--resume", "--set", "convert.verify=false"])
    out = capsys.readouterr().out
    assert status == cli.EXIT_OK
    assert "reusing the finished steps: teacher w32a32, teacher w2a2, student mad, student none" in out
    assert verify == [True, False, False, False]
    assert (run / "report.md").exists() and (run / "tflite" / "mad.tflite").exists()


@pytest.mark.slow
def test_nan_in_mad_exits_8_and_the_hinted_resume_works(tmp_path, small_data, capsys):
    run = tmp_path / "run"
    values = _plan_config(run, "teachers.bits=[32]")
    run_dir.open_run_dir(values, resume=False)
    teacher = models.get("resnet20")((28, 28, 1), 10, bits=32)
    os.makedirs(run / "teachers")
    teacher.save(run / "teachers" / "w32a32.keras")
    args = [*_args(tmp_path), "--set", "teachers.bits=[32]", "--resume"]
    status = cli.main(["distill", *args, "--set", "student.learning_rate=1e30"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_TRAINING, err
    assert "MultiTeacherDistiller: " in err and "is NaN or infinite" in err
    assert "No epoch of this fit had finished, so nothing of it was kept" in err
    assert "backup" not in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert "--set student.learning_rate=1e+29, and run the same command again with --resume" in err
    assert cli.main(["distill", *args, "--set", "student.learning_rate=2e-3"]) == cli.EXIT_OK
    assert "reusing the finished steps: teacher w32a32" in capsys.readouterr().out
    keras.models.load_model(run / "students" / "mad.keras")


def test_report_cell_gives_diff_top1_and_rounding_flips():
    from kerasbnn.run.report import _verification_cell

    assert _verification_cell({"max_abs_diff": None}) == "not verified"
    flipped = {"max_abs_diff": 68.4, "top1_agreement": 0.75, "flipped_bits": {"b2": 1, "b3": 2},
               "first_flip": ["b2", 1]}
    assert _verification_cell(flipped) == (
        "max diff 6.8e+01, top-1 agree 75%, 3 rounding flip(s), first b2 (1)")
    clean = {"max_abs_diff": 2e-5, "top1_agreement": 1.0, "flipped_bits": {}, "first_flip": None}
    assert _verification_cell(clean) == "max diff 2.0e-05, top-1 agree 100%"


def test_method_choices_come_from_the_registry():
    from kerasbnn import methods

    assert methods.METHODS.keys() == ["at", "average", "cmtkd", "kd", "mad", "none", "pkkd",
                                      "progressive"]
    parser = cli.build_parser()
    for name in methods.METHODS.keys():
        assert parser.parse_args(["distill", "--config", "x.yaml", "--method", name]).method == name
    with pytest.raises(SystemExit):
        parser.parse_args(["distill", "--config", "x.yaml", "--method", "magic"])


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["distill.compare=[none, magic]"], "distill.compare[1]='magic' is unknown; valid: at, average, cmtkd"),
        (["distill.compare=[none, mad, none]"], "lists a method twice"),
        (["distill.compare=[none, at, progressive]", "distill.options={p: 3}"],
         "distill.options is the older spelling of one method's section"),
        (["distill.compare=[none, at, progressive]", "distill.at={p: 3}",
          "distill.progressive={varient: II}"],
         "Unknown config key 'distill.progressive.varient'. Did you mean 'variant'?"),
        (["distill.compare=[none, mad]", "distill.at={p: 3}"],
         "distill.at={'p': 3} does not apply to none, mad: only at reads it"),
        (["distill.compare=[none, mad]", "distill.mda={p: 3}"],
         "Unknown config key 'distill.mda': no method has that name"),
        (["distill.compare=[none, mad]", "distill.mad={p: 3}"],
         "Unknown config key 'distill.mad': mad has no options of its own"),
        (["distill.compare=[none, kd]", "teachers.bits=[8, 2]"], "add 32 to teachers.bits"),
        (["distill.compare=[none, progressive]", "distill.options={magic: 1}"],
         "Unknown config key 'distill.options.magic'"),
        (["distill.compare=[none, kd]", "distill.fusion=average"],
         "distill.fusion='average' does not apply to none, kd: only mad reads it"),
        (["distill.compare=[none, mad]", "distill.options={p: 3}"],
         "distill.options={'p': 3} does not apply to none, mad: only at, cmtkd, pkkd, progressive"),
        (["distill.teacher_logits=always"],
         "distill.teacher_logits='always' is unknown; valid: auto, cached, computed"),
        (["distill.teacher_logits=cached"],
         "distill.teacher_logits=cached cannot hold in this run: distill.feature_weight=0.2 "
         "needs the teachers' features at every step; set distill.feature_weight: 0"),
        (["distill.teacher_logits=cached", "distill.feature_weight=0", "data.augment=true"],
         "cannot hold in this run: data.augment is on"),
    ],
)
def test_compare_is_checked_before_anything_is_written(tmp_path, capsys, overrides, message):
    status = cli.main(["pipeline", *_args(tmp_path), *[a for o in overrides for a in ("--set", o)]])
    assert status == cli.EXIT_CONFIG
    assert message in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "run")


def test_arms_default_to_the_baseline_and_the_method():
    values = config.load("examples/configs/demo.yaml", TINY)
    assert pipeline.arms(values) == ["none", "mad"]
    values = config.load("examples/configs/demo.yaml", [*TINY, "distill.compare=[none, kd, mad]"])
    assert pipeline.arms(values) == ["none", "kd", "mad"]
    assert pipeline.teacher_bits(values, ["none", "kd"]) == [32]
    assert pipeline.teacher_bits(values, ["none"]) == [32]  # student.init: float
    randomly = config.load("examples/configs/demo.yaml", [*TINY, "student.init=random"])
    assert pipeline.teacher_bits(randomly, ["none"]) == []
    assert pipeline.teacher_bits(values, ["kd", "mad"]) == [32, 2]


def test_report_puts_the_compared_methods_side_by_side(tmp_path):
    values = _plan_config(tmp_path, "distill.compare=[none, kd, mad]")
    run = run_dir.RunDir(tmp_path)
    for bits, accuracy in ((32, 0.9), (2, 0.8)):
        run.write_json(f"teacher_w{bits}a{bits}", {"accuracy": accuracy})
    converted = {"file_size": 2000, "latency_ms": 1.0, "bconv_ops": 18, "max_abs_diff": 1e-5,
                 "top1_agreement": 1.0, "flipped_bits": {}, "first_flip": None,
                 "summary": {"memory_mbit": 0.1, "ops": 1e6}}
    for name, accuracy in (("none", 0.70), ("kd", 0.72), ("mad", 0.735)):
        run.write_json(f"student_{name}", {"accuracy": accuracy, "teachers": [32, 2],
                                           "images": 12800, "train_seconds": 90.0})
        run.write_json(f"convert_{name}", converted)
    run.write_json("convert_float_teacher", {**converted, "bconv_ops": 0, "file_size": 9000})
    (tmp_path / "results" / "delta_history_mad.csv").write_text(
        "epoch,importance/logits/t0,importance/logits/t1,importance/s1/t0,importance/s1/t1\n"
        "-1.0,0.5,0.5,0.5,0.5\n-0.5,0.6,0.4,0.5,0.5\n0.0,0.7,0.3,0.45,0.55\n1.0,0.8,0.2,0.4,0.6\n")
    path, accuracy = pipeline.write_report(values, run)
    report = pathlib.Path(path).read_text()
    assert ("MAD's delta for the 32/2-bit teachers, after training (largest move from the "
            "start: 0.30):\n\n- logits: 0.800 / 0.200\n- s1: 0.400 / 0.600\n") in report
    assert ("The logits' delta at the end of each epoch (theta trained by the student's Adam at "
            "20x its rate):\n\n- start: 0.500 / 0.500\n- epoch 1: 0.700 / 0.300\n"
            "- epoch 2: 0.800 / 0.200\n") in report
    assert "| method | test accuracy | vs no KD | images through the student | minutes |" in report
    assert "| none | 70.00% |  | 12,800 | 1.5 |" in report
    assert "| kd | 72.00% | +2.00 pt | 12,800 | 1.5 |" in report
    assert "| mad | 73.50% | +3.50 pt | 12,800 | 1.5 |" in report
    assert list(accuracy) == ["float teacher", "2-bit teacher", "binary, no KD", "binary, kd",
                              "binary, mad"]
    for name in ("none", "kd", "mad"):
        assert f"tflite/{name}.tflite" in report
    # each method's report hook: mad's plot of delta; no cmtkd, so no plot of pi
    assert "![delta mad](plots/delta_mad.png)" in report and "![pi]" not in report
    assert (tmp_path / "plots" / "accuracy.png").stat().st_size > 1000


@pytest.mark.slow
def test_pipeline_compares_none_kd_and_mad_in_one_report(tmp_path):
    status = cli.main(["pipeline", *_args(tmp_path), "--set", "distill.compare=[none, kd, mad]"])
    assert status == cli.EXIT_OK
    run = tmp_path / "run"
    report = (run / "report.md").read_text()
    for name in ("none", "kd", "mad"):
        assert f"| {name} |" in report
        result = json.loads((run / "results" / f"student_{name}.json").read_text())
        assert result["method"] == name and 0.0 <= result["accuracy"] <= 1.0
    assert json.loads((run / "results" / "student_kd.json").read_text())["teachers"] == [32]


@pytest.mark.slow
def test_cached_teacher_logits_train_the_student_the_teachers_would(tmp_path, small_data, capsys):
    """`distill.teacher_logits`: cached (auto, logits only, no augmentation) and computed
    train the same kd student on the same batches (mad's learned delta on cached logits:
    tests/distill/logits_cache_test.py)."""
    weights = {}
    for mode in ("computed", "auto"):
        values = config.load("examples/configs/demo.yaml", [
            *TINY, f"run_dir={tmp_path / mode}", f"teachers.cache_dir={tmp_path / 'teachers'}",
            "teachers.bits=[32]", "distill.compare=[kd]", "distill.feature_weight=0",
            f"distill.teacher_logits={mode}"])
        pipeline.run_compare(values)
        weights[mode] = keras.models.load_model(
            tmp_path / mode / "students" / "kd.keras").get_weights()
        assert ("teachers' logits of 230 training images cached" in capsys.readouterr().out) == (
            mode == "auto")
    for cached, computed in zip(weights["auto"], weights["computed"]):
        np.testing.assert_allclose(cached, computed, atol=1e-5)


@pytest.mark.slow
def test_pipeline_compares_none_average_and_cmtkd(tmp_path, monkeypatch):
    # CMT-KD §4.2: `average` distils the equal-weight mean of the pipeline's teachers, trained
    # before and apart from the student (float first, each k-bit one made from it), frozen.
    from kerasbnn import methods

    values = config.load("examples/configs/demo.yaml", [
        f"run_dir={tmp_path / 'run'}", *TINY, "model.width_multiplier=0.25",
        "teachers.bits=[4, 6, 8]", "teachers.quantizer=hwgq",
        "distill.compare=[none, average, cmtkd]"])
    seen, real_fit = {}, methods.StudentJob.fit

    def weights(models):
        return [[w.copy() for w in m.get_weights()] for m in models]

    def fit(self, model, method, callbacks=(), **kwargs):
        if method == "average":
            seen.update(teachers=list(model.teachers), job_teachers=dict(self.teachers),
                        before=weights(model.teachers),
                        learned=[f.learned for f in model.fusions.values()])
        history = real_fit(self, model, method, callbacks, **kwargs)
        if method == "average":
            seen["after"] = weights(model.teachers)
        return history

    monkeypatch.setattr(methods.StudentJob, "fit", fit)
    lines = []
    results = pipeline.run_compare(values, print_fn=lines.append)
    assert any("logits of 230 training images cached" in line for line in lines)  # auto
    assert list(results["teachers"]) == [32, 4, 6, 8]
    assert all("start_accuracy" in results["teachers"][b] for b in (4, 6, 8))  # from the float one
    assert set(results["students"]) == {"none", "average", "cmtkd"}
    assert all(0.0 <= s["accuracy"] <= 1.0 for s in results["students"].values())
    average = results["students"]["average"]
    assert average["teachers"] == [4, 6, 8]
    assert list(average["deltas"]) == ["logits"]  # logits only, no feature taps
    np.testing.assert_allclose(average["deltas"]["logits"], [1 / 3] * 3, atol=1e-6)
    assert seen["learned"] == [False]
    assert [id(t) for t in seen["teachers"]] == [id(seen["job_teachers"][b]) for b in (4, 6, 8)]
    for teacher, before, after, bits in zip(seen["teachers"], seen["before"], seen["after"],
                                            (4, 6, 8)):
        assert not teacher.trainable
        saved = keras.models.load_model(tmp_path / "run" / "teachers" / f"w{bits}a{bits}.keras")
        for a, b, c in zip(before, after, saved.get_weights()):  # BatchNorm statistics too
            np.testing.assert_array_equal(a, b)
            np.testing.assert_array_equal(a, c)
    assert "importances" in results["students"]["cmtkd"]
    shapes = {name: [w.shape for w in keras.models.load_model(
        tmp_path / "run" / "students" / f"{name}.keras").weights] for name in ("none", "cmtkd")}
    assert shapes["none"] == shapes["cmtkd"]  # the same binary student, at the run's width


def test_resume_redoes_a_step_whose_files_are_truncated_or_missing(tmp_path):
    run_dir.open_run_dir(_plan_config(tmp_path), resume=False)
    _done(tmp_path, "teachers/w32a32.keras", "results/convert_float_teacher.json",
          "students/none.keras", "results/convert_none.json", "students/mad.keras",
          "results/convert_mad.json")
    none = tmp_path / "students" / "none.keras"
    none.write_bytes(none.read_bytes()[:30])  # truncated: a zip without its directory
    os.remove(tmp_path / "results" / "teacher_w32a32.json")
    os.remove(tmp_path / "tflite" / "mad.tflite")
    lines = []
    run_dir.open_run_dir(_plan_config(tmp_path), resume=True, print_fn=lines.append)
    assert lines[:3] == [
        "[resume] teacher w32a32 is done again: results/teacher_w32a32.json is missing",
        "[resume] student none is done again: students/none.keras is truncated or corrupt "
        "(BadZipFile: File is not a zip file)",
        "[resume] convert mad is done again: tflite/mad.tflite is missing",
    ]
    assert lines[3] == "[resume] reusing the finished steps: student mad"
    for gone in ("teachers/w32a32.keras", "results/convert_float_teacher.json",
                 "students/none.keras", "results/student_none.json", "results/convert_none.json",
                 "results/convert_mad.json"):
        assert not (tmp_path / gone).exists(), gone
    assert (tmp_path / "students" / "mad.keras").exists()


def test_run_dir_without_its_config_is_refused(tmp_path, capsys):
    run = tmp_path / "run"
    run_dir.open_run_dir(_plan_config(run), resume=False)
    _done(run, "teachers/w32a32.keras", "students/none.keras")
    os.remove(run / "config.yaml")
    for resume in (False, True):
        with pytest.raises(run_dir.RunDirectoryError) as info:
            run_dir.open_run_dir(_plan_config(run, "student.epochs=3"), resume=resume)
        message = str(info.value)
        assert message.startswith(f"{run} holds the files of a run (teachers/w32a32.keras, "
                                  "results/teacher_w32a32.json, students/none.keras, ")
        assert "but no config.yaml" in message and "--set run_dir=runs/new" in message
        assert f"rm -r {run}/teachers/w32a32.keras " in message
    assert not (run / "config.yaml").exists()
    status = cli.main(["pipeline", *_args(tmp_path), "--set", "student.epochs=3"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_CONFIG and "but no config.yaml" in err and len(err.splitlines()) == 1
    assert not (run / "config.yaml").exists()


def test_a_loss_weight_may_change_for_a_step_cut_mid_training_not_for_a_finished_one(tmp_path):
    # The fix a NaN of an overflowing weighted term asks for: lower the weight, --resume.
    run_dir.open_run_dir(_plan_config(tmp_path), resume=False)
    _touch(tmp_path, "backup/student_mad/state.npz")
    lines = []
    run_dir.open_run_dir(_plan_config(tmp_path, "distill.feature_weight=0.1"), resume=True,
                         print_fn=lines.append)
    assert lines == ["[resume] student mad continues from its last finished epoch "
                     "(backup/student_mad)"]
    _done(tmp_path, "students/mad.keras")
    with pytest.raises(run_dir.RunDirectoryError, match="distill.feature_weight 0.1 -> 0.05"):
        run_dir.open_run_dir(_plan_config(tmp_path, "distill.feature_weight=0.05"), resume=True)

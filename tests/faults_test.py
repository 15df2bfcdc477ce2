"""Faults during a run, injected in a child process: SIGKILL at each save point, a full disk
(a file-size limit), Ctrl-C, a folder made unwritable, a truncated artefact, a diverging or
overflowing loss. Each leaves a run that `--resume` continues without training a finished
epoch again, and the command says what happened in one line."""

import json
import os
import signal
import subprocess
import sys

import keras
import pytest

from kerasbnn import cli, run_dir
from tests.pipeline_test import TINY, _args, _finished_training, _plan_config

# The child: `python -c FAULT point args...` runs `kerasbnn args...` with the fault `point`.
FAULT = """
import os, resource, signal, sys
point, args = sys.argv[1], sys.argv[2:]
import keras
from kerasbnn import cli, training
from kerasbnn.run import convert as run_convert
from kerasbnn.run import teachers

def die():
    os.kill(os.getpid(), signal.SIGKILL)

if point == "after_fit":  # the teacher's last epoch is done, before it is evaluated and saved
    fit = teachers.fit_resumable
    teachers.fit_resumable = lambda *a, **k: (fit(*a, **k), die())
elif point == "during_save":  # half of the teacher's .keras file is written
    save = keras.Model.save
    def half_save(self, path, *a, **k):
        save(self, path, *a, **k)
        with open(path, "r+b") as f:
            f.truncate(os.path.getsize(path) // 2)
        die()
    keras.Model.save = half_save
elif point == "during_conversion":  # the first .tflite is written, its results are not
    convert = run_convert.lce_convert
    run_convert.lce_convert = lambda *a, **k: (convert(*a, **k), die())
elif point == "sigint":  # Ctrl-C after the first epoch
    class Interrupt(keras.callbacks.Callback):
        def on_epoch_end(self, epoch, logs=None):
            os.kill(os.getpid(), signal.SIGINT)
    fit = teachers.fit_resumable
    teachers.fit_resumable = lambda *a, **k: fit(*a, **{**k, "callbacks": [Interrupt()]})
elif point.startswith("fsize="):  # a full disk: no file may grow past the limit
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # so a write raises OSError EFBIG
    limit = int(point.split("=")[1])
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
sys.exit(cli.main(args))
"""
TEACHER = ["train", "--bits", "32", "--set", "teachers.float_epochs=2"]


def _child(point, args, timeout=600):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"}
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    return subprocess.run([sys.executable, "-c", FAULT, point, *args], env=env, cwd=root,
                          capture_output=True, text=True, timeout=timeout)


def _own_lines(stderr):
    """The command's own lines of a child's stderr (TensorFlow logs at import aside)."""
    return [line for line in stderr.splitlines() if line.startswith("kerasbnn ")]


def _epochs(run, name):
    rows = (run / "logs" / f"{name}.csv").read_text().strip().splitlines()[1:]
    return [row.split(",")[0] for row in rows]


def _leftovers(run):
    return [os.path.join(folder, name) for folder, _, names in os.walk(run) for name in names
            if ".partial" in name or name.endswith(".tmp")]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["after_fit", "during_save", "sigint"])
def test_a_fault_at_a_save_point_loses_no_finished_epoch(tmp_path, point, capsys):
    args = [*TEACHER[:1], *_args(tmp_path), *TEACHER[1:]]
    done = _child(point, args)
    run = tmp_path / "run"
    if point == "sigint":
        assert done.returncode == cli.EXIT_INTERRUPTED, done.stderr[-3000:]
        assert _own_lines(done.stderr) == [
            f"kerasbnn train: error: interrupted; the finished steps and the last finished epoch "
            f"are kept in {run}: run the same command with --resume to continue."]
        assert "Traceback" not in done.stderr
    else:
        assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert not (run / "teachers" / "w32a32.keras").exists()
    assert cli.main([*args, "--resume"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert "[resume] teacher w32a32 continues from its last finished epoch" in out
    assert _epochs(run, "teacher_w32a32") == ["0", "1"]  # no epoch trained twice
    keras.models.load_model(run / "teachers" / "w32a32.keras")
    result = json.loads((run / "results" / "teacher_w32a32.json").read_text())
    assert result["epochs"] == 2
    assert not (run / "backup" / "teacher_w32a32").exists() and not _leftovers(run)


@pytest.mark.slow
def test_a_full_disk_exits_4_in_one_line_and_leaves_a_run_that_resumes(tmp_path, capsys):
    args = [*TEACHER[:1], *_args(tmp_path), *TEACHER[1:]]
    done = _child("fsize=300000", args)  # the backup of an epoch is larger
    run = tmp_path / "run"
    backup = run / "backup" / "teacher_w32a32"
    assert done.returncode == cli.EXIT_OUTPUT, done.stderr[-3000:]
    assert _own_lines(done.stderr) == [
        f"kerasbnn train: error: could not write {backup / 'state.npz'} (File too large). The "
        f"finished steps and the last finished epoch are kept in {run}: free some space or make "
        "it writable, then run the same command with --resume to continue."]
    assert "Traceback" not in done.stderr and "Exception ignored" not in done.stderr
    assert not _leftovers(run) and not (backup / "state.npz").exists()
    # A backup that does not read back (e.g. from a disk that filled up under an older
    # version) is discarded with a notice, and the step trains from its first epoch.
    (backup / "state.npz").write_bytes(b"PK\x03\x04 cut off")
    assert cli.main([*args, "--resume"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert f"[resume] the backup {backup} is corrupt or from another model (" in out
    assert _epochs(run, "teacher_w32a32") == ["0", "1"]
    keras.models.load_model(run / "teachers" / "w32a32.keras")


@pytest.mark.slow
@pytest.mark.tflite
def test_a_kill_during_conversion_and_an_unwritable_tflite_folder_resume(
        tmp_path, capsys):
    run = tmp_path / "run"
    _finished_training(run, _plan_config(run))
    args = ["pipeline", *_args(tmp_path), "--resume"]
    done = _child("during_conversion", args)
    assert done.returncode == -signal.SIGKILL, done.stderr[-3000:]
    assert (run / "tflite" / "float_teacher.tflite").exists()
    assert not (run / "results" / "convert_float_teacher.json").exists()
    # tflite/ cannot be written: exit 4 in one line, the trained models kept.
    if os.geteuid() != 0:
        os.chmod(run / "tflite", 0o500)
    else:  # root writes anywhere: a file where the folder was
        os.rename(run / "tflite", tmp_path / "tflite")
        (run / "tflite").write_text("")
    status = cli.main(args)
    err = capsys.readouterr().err
    assert status == cli.EXIT_OUTPUT, err
    assert len(err.splitlines()) == 1 and "--resume" in err and str(run / "tflite") in err
    if os.geteuid() != 0:
        os.chmod(run / "tflite", 0o700)
    else:
        os.remove(run / "tflite")
        os.rename(tmp_path / "tflite", run / "tflite")
    assert cli.main(args) == cli.EXIT_OK
    assert (run / "report.md").exists() and not _leftovers(run)
    for name in ("float_teacher", "none", "mad"):
        assert json.loads((run / "results" / f"convert_{name}.json").read_text())["file_size"] > 0


@pytest.mark.slow
def test_a_truncated_student_is_named_and_trained_again(tmp_path, capsys):
    args = ["train", *_args(tmp_path), "--bits", "1", "--set", "student.init=random"]
    assert cli.main(args) == cli.EXIT_OK
    student = tmp_path / "run" / "students" / "none.keras"
    student.write_bytes(student.read_bytes()[:2000])
    capsys.readouterr()
    assert cli.main([*args, "--resume"]) == cli.EXIT_OK
    out = capsys.readouterr().out
    assert ("[resume] student none is done again: students/none.keras is truncated or "
            "corrupt (BadZipFile: ") in out
    keras.models.load_model(student)


@pytest.mark.slow
def test_a_diverging_teacher_stops_like_a_nan(tmp_path, capsys):
    args = ["train", *_args(tmp_path), "--bits", "32", "--set", "teachers.learning_rate=1e6"]
    status = cli.main(args)
    err = capsys.readouterr().err
    assert status == cli.EXIT_TRAINING, err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert "times its first value" in err and "training diverged and stopped" in err
    assert ("Lower teachers.learning_rate (now 1e+06), e.g. --set teachers.learning_rate="
            "100000, and run the same command again with --resume (or set divergence_factor: "
            "null to turn this check off)") in err
    assert not (tmp_path / "run" / "teachers" / "w32a32.keras").exists()


@pytest.mark.slow
def test_an_overflowing_feature_weight_is_named_not_the_learning_rate(tmp_path, capsys):
    from kerasbnn import models

    run = tmp_path / "run"
    run_dir.open_run_dir(_plan_config(run, "teachers.bits=[32]"), resume=False)
    os.makedirs(run / "teachers")
    models.get("resnet20")((28, 28, 1), 10, bits=32).save(run / "teachers" / "w32a32.keras")
    run_dir.RunDir(run).write_json("teacher_w32a32", {"accuracy": 0.1})
    status = cli.main(["distill", *_args(tmp_path), "--set", "teachers.bits=[32]", "--resume",
                       "--set", "distill.feature_weight=1e38"])
    err = capsys.readouterr().err
    assert status == cli.EXIT_TRAINING, err
    assert ("feature_loss (smooth L1 to the fused teacher features) is finite, but times "
            "feature_weight=1e+38 it is NaN or infinite") in err
    assert "Lower distill.feature_weight (now 1e+38; the default is 0.2)" in err
    assert "learning_rate" not in err and len(err.splitlines()) == 1


def test_training_advice_names_the_weight_a_term_overflowed_with():
    from kerasbnn import config
    from kerasbnn.run.advice import nan_advice

    advice = nan_advice(config.load(None, [*TINY, "distill.kl_weight=3e38"]), "student")
    assert advice("MultiTeacherDistiller: kl_loss (KL) is finite, but times kl_weight=3e+38 it "
                  "is NaN").startswith("Lower distill.kl_weight (now 3e+38; the default is 1)")
    assert advice("loss became nan").startswith("Lower student.learning_rate (now 0.002)")


def test_a_truncated_cached_teacher_is_trained_again_not_loaded(tmp_path):
    from kerasbnn import teacher_cache

    (tmp_path / "k.keras").write_bytes(b"PK\x03\x04 cut off")
    (tmp_path / "k.json").write_text(json.dumps({"result": {"accuracy": 0.5}}))
    assert teacher_cache.load(str(tmp_path), "k", str(tmp_path / "run" / "t.keras")) is None
    assert not (tmp_path / "run").exists()


def test_an_os_error_is_exit_4_in_the_run_directory_and_3_elsewhere(tmp_path):
    import errno

    from kerasbnn import config

    values = config.load(None, [f"run_dir={tmp_path / 'run'}"])
    full = OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "run" / "a.keras"))
    message, status = cli._io_failure(full, values)
    assert status == cli.EXIT_OUTPUT and message.startswith(
        f"could not write {tmp_path / 'run' / 'a.keras'} (No space left on device). The "
        "finished steps and the last finished epoch are kept in ")
    unreadable = PermissionError(errno.EACCES, "Permission denied", str(tmp_path / "x.gz"))
    assert cli._io_failure(unreadable, values) == (
        f"could not read {tmp_path / 'x.gz'} (Permission denied).", cli.EXIT_INPUT)

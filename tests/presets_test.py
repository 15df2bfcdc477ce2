"""Named presets (`kerasbnn.presets`): `preset: binary_recipe` reaches the networks, the
optimizer, the data and the callbacks of a run built through the command line (not its
accuracy, which docs/benchmarks/plateau.md measures); precedence, unknown names, the saved
config and the teacher cache's keys; the demo's departures from the preset."""

import os

import keras
import numpy as np
import pytest

import kerasbnn.data
from kerasbnn import cli, config, methods, presets, resume, teacher_cache, training
from kerasbnn.layers import QuantConv2D
from kerasbnn.plateau import StopOnPlateau
from kerasbnn.run import checks
from kerasbnn.run_dir import RunDir

DEMO = "examples/configs/demo.yaml"
#: A tiny run of the preset's student (`none`) at width 0.25 on the synthetic images.
TINY = ["model.width_multiplier=0.25", "teachers.bits=[32]", "teachers.float_epochs=1",
        "student.epochs=2", "student.precise_bn=0", "data.train_limit=256", "data.val_limit=64",
        "data.batch_size=32"]


def _file(tmp_path, text, name="run.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return str(path)


def _spy_the_run(monkeypatch):
    """Records each student's fit as it starts, every `StopOnPlateau` made and every data
    split loaded (split, augment)."""
    seen = {"fits": [], "stoppers": [], "loads": []}
    fit = training.fit_resumable

    def fit_spy(model, train_ds, **kwargs):
        kernels = {layer.name: np.array(layer.kernel) for layer in model.layers
                   if isinstance(layer, QuantConv2D)}
        seen["fits"].append({"model": model, "optimizer": model.optimizer, "kernels": kernels,
                             "epochs": kwargs["epochs"], "name": kwargs["name"],
                             "steps": int(train_ds.cardinality())})
        return fit(model, train_ds, **kwargs)

    class Stopper(StopOnPlateau):
        def __init__(self, patience):
            super().__init__(patience)
            seen["stoppers"].append(self)

    load = kerasbnn.data.load

    def load_spy(name, split="train", *args, **kwargs):
        seen["loads"].append((split, kwargs.get("augment")))
        return load(name, split, *args, **kwargs)

    monkeypatch.setattr(training, "fit_resumable", fit_spy)
    monkeypatch.setattr(training, "StopOnPlateau", Stopper)
    monkeypatch.setattr(kerasbnn.data, "load", load_spy)
    return seen


def _blocks(model):
    """`{block name: layers}` of a ResNet-20's residual blocks (`stage<s>_block<b>_...`)."""
    found = {}
    for layer in model.layers:
        if layer.name.startswith("stage") and "_block" in layer.name:
            block = "_".join(layer.name.split("_")[:2])
            found.setdefault(block, []).append(layer)
    return found


def test_a_run_with_the_preset_trains_the_recipe_through_the_command_line(tmp_path, monkeypatch):
    seen = _spy_the_run(monkeypatch)
    path = _file(tmp_path, f"preset: binary_recipe\nrun_dir: {tmp_path / 'run'}\n")
    sets = [a for item in TINY for a in ("--set", item)]
    assert cli.main(["distill", "--method", "none", "--config", path, *sets]) == 0

    (fit,) = [f for f in seen["fits"] if f["name"].startswith("student")]  # `none` alone
    assert fit["name"] == "student_none" and fit["epochs"] == 2
    blocks = _blocks(fit["model"])
    assert len(blocks) == 18  # the one-conv blocks, six per stage
    for name, layers in blocks.items():  # each a bireal block: one binary conv, no RSign/RPReLU
        convs = [layer for layer in layers if isinstance(layer, QuantConv2D)
                 and layer.input_quantizer is not None]
        assert [layer.name for layer in convs] == [f"{name}_conv"], name
        assert not [layer for layer in layers if layer.name.endswith(("_rsign", "_rprelu"))]

    optimizer = fit["optimizer"]
    assert isinstance(optimizer, keras.optimizers.Adam)
    schedule = keras.optimizers.schedules.deserialize(optimizer.get_config()["learning_rate"])
    assert isinstance(schedule, keras.optimizers.schedules.CosineDecay)
    assert schedule.initial_learning_rate == 0.005
    assert schedule.decay_steps == 2 * fit["steps"] and fit["steps"] > 1

    float_teacher = keras.models.load_model(RunDir(str(tmp_path / "run")).teacher(32))
    for name, kernel in fit["kernels"].items():  # the student started from these weights
        np.testing.assert_array_equal(kernel, np.array(float_teacher.get_layer(name).kernel))

    assert [stopper.patience for stopper in seen["stoppers"]] == [4]  # the float teacher's
    assert seen["stoppers"][0].last_epoch == 0  # it watched the teacher's one epoch
    trained = [augment for split, augment in seen["loads"] if split == "train"]
    assert trained and not any(trained)  # no augmentation anywhere

    saved = config.load(str(tmp_path / "run" / "config.yaml"))
    assert saved == config.load(path, [*TINY, "distill.method=none"])  # as `distill` set it
    assert saved.preset == "binary_recipe"


def test_the_file_beats_the_preset_and_set_beats_the_file(tmp_path):
    path = _file(tmp_path, "preset: binary_recipe\nstudent:\n  epochs: 3\nmodel:\n  block: basic\n")
    values = config.load(path)
    assert (values.student.epochs, values.model.block) == (3, "basic")  # the file's
    assert values.student.learning_rate == 0.005  # the preset's, beside the file's key
    assert values.teachers.patience == 4 and values.data.val_split == 0.1
    assert values.teachers.epochs == config.TeachersConfig().epochs  # set by neither
    values = config.load(path, ["student.epochs=5", "student.learning_rate=0.001"])
    assert (values.student.epochs, values.student.learning_rate) == (5, 0.001)


def test_set_names_or_removes_a_preset(tmp_path):
    plain = _file(tmp_path, "student:\n  epochs: 3\n")
    values = config.load(plain, ["preset=binary_recipe"])
    assert (values.model.block, values.student.epochs, values.preset) == ("bireal", 3,
                                                                         "binary_recipe")
    without = config.load(DEMO, ["preset=null"])
    assert without.preset is None and without.model.block == "reactnet"
    assert without.student.learning_rate == config.StudentConfig().learning_rate


def test_a_toml_file_and_from_dict_take_the_preset(tmp_path):
    path = _file(tmp_path, 'preset = "binary_recipe"\n[student]\nepochs = 4\n', "run.toml")
    values = config.load(path)
    assert (values.model.block, values.student.epochs) == ("bireal", 4)
    assert config.from_dict({"preset": "binary_recipe", "student": {"epochs": 4}}) == values


@pytest.mark.parametrize("name", ["binary_recipie", "recipe", 3])
def test_an_unknown_preset_names_the_valid_ones(name):
    with pytest.raises(config.ConfigError, match=r"Unknown preset .*Valid presets: binary_recipe"):
        config.from_dict({"preset": name})


def test_an_unknown_preset_names_the_closest_one():
    with pytest.raises(config.ConfigError, match="Did you mean 'binary_recipe'"):
        config.from_dict({"preset": "binary_recipie"})


def test_an_unknown_preset_stops_the_command_before_anything_is_written(tmp_path, capsys):
    status = cli.main(["pipeline", "--config", DEMO, "--set", f"run_dir={tmp_path / 'run'}",
                       "--set", "preset=binary_recipie"])
    assert status == cli.EXIT_CONFIG and not os.path.exists(tmp_path / "run")
    assert "Did you mean 'binary_recipe'? Valid presets: binary_recipe" in capsys.readouterr().err


def test_the_saved_config_records_the_name_and_reads_back_the_same(tmp_path):
    values = config.load(DEMO, ["student.epochs=3"])
    saved = config.to_dict(values)
    assert saved["preset"] == "binary_recipe" and saved["student"]["learning_rate"] == 0.005
    config.dump(values, str(tmp_path / "config.yaml"))
    again = config.load(str(tmp_path / "config.yaml"))
    assert again == values
    config.dump(again, str(tmp_path / "again.yaml"))
    assert config.load(str(tmp_path / "again.yaml")) == values


def test_the_preset_name_is_no_part_of_a_teacher_cache_key():
    with_preset = config.load(DEMO)
    explicit = config.to_dict(with_preset)
    del explicit["preset"]
    explicit = config.from_dict(explicit)
    for bits in with_preset.teachers.bits:
        assert teacher_cache.teacher_key(with_preset, bits) == teacher_cache.teacher_key(
            explicit, bits)
    plain = config.from_dict({})
    assert "block" not in teacher_cache.teacher_key(plain, 32)[1]  # no preset: keys as before
    assert "patience" not in teacher_cache.teacher_key(plain, 32)[1]


def test_naming_the_preset_in_a_resumed_run_invalidates_no_step(tmp_path):
    with_preset = config.load(DEMO)
    explicit = config.to_dict(with_preset)
    explicit["preset"] = None
    changes = resume.changed_keys(config.from_dict(explicit), with_preset)
    assert changes == {"preset": (None, "binary_recipe")}
    (tmp_path / "teachers").mkdir()
    (tmp_path / "teachers" / "w32a32.keras").touch()
    steps = resume.known_steps(str(tmp_path), methods.student_keys())
    assert steps and not [step.name for step in steps if step.depends_on("preset")]


def test_a_presets_values_are_not_refused_for_methods_that_do_not_read_them():
    values = config.from_dict({"preset": "binary_recipe", "distill": {"method": "pkkd"}})
    checks._check_fields(values, ["pkkd"])  # pkkd reads no teachers.* key: the preset's stay
    explicit = config.to_dict(values)
    del explicit["preset"]
    with pytest.raises(config.ConfigError, match="teachers.float_epochs=15 does not apply"):
        checks._check_fields(config.from_dict(explicit), ["pkkd"])  # written by the user
    # The demo undoes the preset's teachers.patience (back to the library's default), which
    # cmtkd from random weights does not read: not refused.
    demo = config.load(DEMO, ["distill.method=cmtkd", "distill.feature_weight=0.2",
                              "student.init=random", "teachers.epochs=2",
                              "teachers.float_epochs=null"])
    checks._check_fields(demo, ["cmtkd"])
    with pytest.raises(config.ConfigError, match=r"teachers.patience=2 does not apply to pkkd.*"
                                                 r"its default under preset binary_recipe is 4"):
        checks._check_fields(config.from_dict({**config.to_dict(values),
                                               "teachers": {"patience": 2}}), ["pkkd"])


def test_every_preset_reads_as_a_config_and_documents_what_was_measured():
    assert "binary_recipe" in presets.PRESETS
    for name, function in presets.PRESETS.items():
        values = config.from_dict({"preset": name})
        assert config.to_dict(values)["preset"] == name
        assert "Measured" in function.__doc__ and "Not measured" in function.__doc__
        assert name in presets.describe()
    assert presets.values("binary_recipe") is not presets.values("binary_recipe")


def test_a_second_preset_of_the_same_name_is_refused():
    with pytest.raises(ValueError, match="already registered"):
        presets.preset("binary_recipe")(lambda: {})


def test_the_demo_departs_from_the_preset_where_it_says():
    values = config.load(DEMO)
    assert values.preset == "binary_recipe"
    assert (values.model.block, values.model.width_multiplier) == ("reactnet", 0.5)
    assert (values.student.epochs, values.student.learning_rate) == (2, 0.005)
    assert values.teachers.patience is None and values.teachers.float_epochs == 3
    assert (values.data.augment, values.data.val_split) == (False, 0.1)
    assert values.student.init == "float"

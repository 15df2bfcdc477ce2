import re

import pytest

from kerasbnn import config as cfg


def test_defaults_and_yaml_round_trip(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("run_dir: out\nteachers:\n  bits: [32, 4]\n  epochs: 3\ndata:\n  train_limit: 100\n")
    config = cfg.load(str(path))
    assert config.run_dir == "out"
    assert config.teachers.bits == [32, 4]
    assert config.teachers.epochs == 3
    assert config.data.train_limit == 100
    assert config.student.binary == "bireal"  # default kept
    cfg.dump(config, str(tmp_path / "used.yaml"))
    assert cfg.load(str(tmp_path / "used.yaml")) == config


def test_toml_and_overrides(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text('seed = 3\n[distill]\nfeature_weight = 0.1\n')
    config = cfg.load(str(path), overrides=["distill.kl_weight=2", "data.name=cifar10"])
    assert config.seed == 3
    assert config.distill.feature_weight == 0.1
    assert config.distill.kl_weight == 2.0
    assert config.data.name == "cifar10"


def test_unknown_key_names_key_and_suggests(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("teachers:\n  epoch: 3\n")
    with pytest.raises(cfg.ConfigError, match=r"teachers\.epoch.*Did you mean 'epochs'"):
        cfg.load(str(path))


@pytest.mark.parametrize(
    "override, message",
    [
        ("teachers.epochs=two", "teachers.epochs must be an integer"),
        ("teachers.bits=8", "teachers.bits must be a list"),
        ("convert.verify=3", "convert.verify must be true or false"),
        ("distill.kl_weight=[1]", "distill.kl_weight must be a number"),
        ("nonsense", "section.key=value"),
    ],
)
def test_wrong_types_fail(override, message):
    with pytest.raises(cfg.ConfigError, match=message.replace(".", r"\.")):
        cfg.load(None, overrides=[override])


def test_missing_file_and_bad_extension(tmp_path):
    with pytest.raises(cfg.ConfigError, match="does not exist"):
        cfg.load(str(tmp_path / "nope.yaml"))
    bad = tmp_path / "run.json"
    bad.write_text("{}")
    with pytest.raises(cfg.ConfigError, match=r"\.yaml, \.yml or \.toml"):
        cfg.load(str(bad))


@pytest.mark.parametrize(
    "text, message",
    [
        ("- a\n- b\n", r"must hold a mapping of sections.*\['a', 'b'\] \(a list\)"),
        ("teachers: [1\n", r"is not valid YAML: .* at line 2, column 1"),
        ('seed: !!python/object/apply:os.system ["touch {marker}"]\n',
         r"uses a YAML tag .*python/object/apply:os\.system.*plain data only"),
    ],
)
def test_bad_yaml_files_fail_with_a_config_error(tmp_path, text, message):
    marker = tmp_path / "executed"
    path = tmp_path / "run.yaml"
    path.write_text(text.format(marker=marker))
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(str(path))
    assert not marker.exists()  # safe_load: the tag is refused, never run


def test_bad_toml_and_unreadable_files(tmp_path):
    path = tmp_path / "run.toml"
    path.write_text("seed = [")
    with pytest.raises(cfg.ConfigError, match="is not valid TOML"):
        cfg.load(str(path))
    folder = tmp_path / "folder.yaml"
    folder.mkdir()
    with pytest.raises(cfg.ConfigError, match="cannot be read"):
        cfg.load(str(folder))


def test_numbers_written_as_yaml_1_2_are_numbers_in_float_fields(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("teachers:\n  learning_rate: 2e-3\nstudent:\n  learning_rate: '-1.5E+1'\n")
    with pytest.raises(cfg.ConfigError, match="student.learning_rate must be greater than 0"):
        cfg.load(str(path))
    config = cfg.load(str(path), ["student.learning_rate=1e-4"])
    assert config.teachers.learning_rate == 2e-3 and config.student.learning_rate == 1e-4
    for text in ("2e-3x", "nan", "0x10", ""):
        with pytest.raises(cfg.ConfigError, match="must be a number"):
            cfg.from_dict({"teachers": {"learning_rate": text}})
    with pytest.raises(cfg.ConfigError, match="must be a finite number"):
        cfg.load(None, ["distill.kl_weight=.inf"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("teachers.epochs=-1", "teachers.epochs must be at least 1, got -1"),
        ("student.epochs=-2", "student.epochs must be at least 1, got -2"),
        ("student.epochs=0", "student.epochs must be at least 1, got 0"),
        ("teachers.learning_rate=-1", "teachers.learning_rate must be greater than 0.0"),
        ("student.learning_rate=0", "student.learning_rate must be greater than 0.0"),
        ("data.batch_size=0", "data.batch_size must be at least 1"),
        ("data.train_limit=0", "data.train_limit must be at least 1"),
        ("data.train_limit=1e8", "data.train_limit must be an integer, got '1e8'. Write it as 100000000"),
        ("benchmark.runs=0", "benchmark.runs must be at least 1"),
        ("seed=-1", "seed must be at least 0"),
        ("model.bn_momentum=1.5", "model.bn_momentum must be at most 1.0"),
    ],
)
def test_nonsense_values_fail_naming_the_key(override, message):
    with pytest.raises(cfg.ConfigError, match=message.replace(".", r"\.")):
        cfg.load(None, overrides=[override])


@pytest.mark.parametrize(
    "override, message",
    [
        ("run_dir.x=1", "run_dir must be a string"),
        ("distill.options={a: ", "the value is not valid YAML"),
        ("teachers..epochs=1", "must look like section.key=value"),
    ],
)
def test_malformed_overrides_fail_with_a_config_error(override, message):
    with pytest.raises(cfg.ConfigError, match=message.replace(".", r"\.")):
        cfg.load(None, overrides=[override])


def test_override_below_a_value_names_it():
    with pytest.raises(cfg.ConfigError, match=r"run_dir is a value \('out'\), not a section"):
        cfg.load(None, overrides=["run_dir=out", "run_dir.x=1"])


@pytest.mark.parametrize(
    "override, message",
    [
        ("student.schedule=two-step",
         "student.schedule='two-step' is unknown; valid: one_step, two_step. Did you mean "
         "'two_step'?"),
        ("student.schedule=reactnet", "student.schedule='reactnet' is unknown; valid: one_step, "
                                      "two_step."),
        ("student.schedule=2", "student.schedule must be a string, got 2"),
        ("student.schedul=two_step", "Unknown config key 'student.schedul'. Did you mean "
                                     "'schedule'?"),
    ],
)
def test_student_schedule_is_one_of_its_choices(override, message):
    with pytest.raises(cfg.ConfigError, match=re.escape(message)):
        cfg.load(None, overrides=[override])
    assert cfg.load(None).student.schedule == "one_step"
    assert cfg.load(None, ["student.schedule=two_step"]).student.schedule == "two_step"


@pytest.mark.parametrize("text, message", [
    ("seed: 1\nseed: 2\n", r"the key 'seed' appears twice in one mapping \(lines 1 and 2\)"),
    ("teachers:\n  epochs: 1\n  bits: [32]\n  epochs: 3\n",
     r"the key 'epochs' appears twice in one mapping \(lines 2 and 4\)"),
])
def test_a_repeated_yaml_key_is_refused_naming_key_and_lines(tmp_path, text, message):
    path = tmp_path / "run.yaml"
    path.write_text(text)
    with pytest.raises(cfg.ConfigError, match=message):
        cfg.load(str(path))


def test_a_repeated_key_in_an_override_or_toml_is_refused(tmp_path):
    with pytest.raises(cfg.ConfigError, match="'logits' appears twice"):
        cfg.load(None, ["distill.delta_lr_scale={logits: 1, logits: 2}"])
    path = tmp_path / "run.toml"
    path.write_text("seed = 1\nseed = 2\n")
    with pytest.raises(cfg.ConfigError, match="not valid TOML"):
        cfg.load(str(path))


@pytest.mark.parametrize("override", ["run_dir=''", "run_dir='  '", "data.name=''",
                                      "distill.compare=[none, '']"])
def test_empty_strings_are_config_errors(override):
    key = override.split("=")[0]
    with pytest.raises(cfg.ConfigError, match=re.escape(key) + r".* is an empty string"):
        cfg.load(None, [override])


@pytest.mark.parametrize("old, new", [("alpha", "kl_weight"), ("beta", "feature_weight")])
def test_renamed_config_keys_name_the_new_key(old, new):
    with pytest.raises(cfg.ConfigError, match=f"'distill.{old}' is now 'distill.{new}'"):
        cfg.load(None, [f"distill.{old}=0.5"])

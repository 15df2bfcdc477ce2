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
    path.write_text('seed = 3\n[distill]\nbeta = 0.1\n')
    config = cfg.load(str(path), overrides=["distill.alpha=2", "data.name=cifar10"])
    assert config.seed == 3
    assert config.distill.beta == 0.1
    assert config.distill.alpha == 2.0
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
        ("distill.alpha=[1]", "distill.alpha must be a number"),
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

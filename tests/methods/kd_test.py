"""`kd` and `mad` build their distiller from every loss key of the config (`LOSS_KEYS`)."""

import types

import pytest

from kerasbnn import config, data, distill, methods, pipeline


class Built(Exception):
    """Stops the method once it has built its distiller."""


@pytest.mark.parametrize("name", ["kd", "mad"])
@pytest.mark.parametrize("overrides, expected", [
    ([], dict(ce_weight=1.0, kl_weight=1.0, feature_weight=0.2, temperature=1.0,
              scale_by_temperature_squared=False, feature_reduction="mean")),
    (["distill.ce_weight=0", "distill.temperature=4", "distill.temperature_squared=true",
      "distill.feature_reduction=sum", "distill.feature_weight=0.0001"],
     dict(ce_weight=0.0, temperature=4.0, scale_by_temperature_squared=True,
          feature_reduction="sum", feature_weight=0.0001)),
])
def test_the_distiller_gets_the_configs_loss(monkeypatch, name, overrides, expected):
    assert {k: v for k, v in _built(monkeypatch, name, overrides).items() if k in expected} \
        == expected


def test_mad_gets_the_delta_objective(monkeypatch):
    built = _built(monkeypatch, "mad", ["distill.delta_objective=teacher_ce"])
    assert built["delta_objective"] == "teacher_ce"
    with pytest.raises(config.ConfigError, match="Unknown distill.delta_objective 'ce'"):
        pipeline.check_config(config.load(None, ["distill.delta_objective=ce"]), names=["mad"])


def _built(monkeypatch, name, overrides):
    """The keyword arguments method `name` builds its `MultiTeacherDistiller` with."""
    values = config.load(None, [f"distill.method={name}", *overrides])
    pipeline.check_config(values, names=[name])
    seen = {}

    def distiller(student, teachers, **kwargs):
        seen.update(kwargs)
        raise Built

    monkeypatch.setattr(distill, "MultiTeacherDistiller", distiller)
    job = types.SimpleNamespace(config=values, teachers={b: object() for b in (32, 8, 4, 2)},
                                info=data.info(values.data.name),
                                train_student=lambda name, trainer, data=None: trainer(object(), None),
                                print_fn=lambda *_: None)
    with pytest.raises(Built):
        methods.METHODS.get(name)(job)
    return seen


def test_the_loss_keys_are_what_resume_compares():
    for name in ("kd", "mad"):
        keys = methods.config_keys(name)
        assert {"distill.ce_weight", "distill.temperature_squared",
                "distill.feature_reduction"} <= set(keys)

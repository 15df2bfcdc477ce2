"""One distiller contract: every `TeacherStudent` subclass of kerasbnn returns the base's
`call` structure, computes its loss on it, and survives `get_config`/`from_config`."""

import keras
import numpy as np
import pytest
from keras import ops

import kerasbnn.distill  # noqa: F401  (registers every distiller)
import kerasbnn.methods  # noqa: F401  (and any a method defines)
from kerasbnn.distill import (
    CollaborativeDistiller, LogitsDistillation, MultiTeacherDistiller, PKKDDistiller,
    TeacherStudent, TermsDistiller)
from kerasbnn.distill.progressive import BlockwiseModel
from kerasbnn.models import adder_resnet20
from tests.distill.collaborative_test import tiny as cmtkd_net
from tests.distill.conftest import tiny_model
from tests.distill.progressive_test import tiny as progressive_net

KEYS = ["logits", "student_features", "teacher_logits", "teacher_features"]


def _subclasses(cls):
    return {cls} | {s for sub in cls.__subclasses__() for s in _subclasses(sub)}


def _images(shape, n=4):
    rng = np.random.default_rng(0)
    return rng.normal(size=(n, *shape)).astype("float32"), rng.integers(0, 3, n).astype("int32")


def _base():
    """The base alone: its `call`, with one CE term (it computes no loss of its own)."""
    return TeacherStudent(tiny_model("s", classes=3), [tiny_model("t", classes=3, seed=1)],
                          {"student_loss": 1.0}, student_taps=["stage2_out"])


FACTORIES = {
    TeacherStudent: (_base, (8, 8, 3)),
    MultiTeacherDistiller: (lambda: MultiTeacherDistiller(
        tiny_model("s", classes=3, binary=True),
        [tiny_model(f"t{m}", classes=3, seed=m + 1) for m in range(2)],
        feature_taps=["stage1_out", "stage2_out"]), (8, 8, 3)),
    TermsDistiller: (lambda: TermsDistiller(
        tiny_model("s", classes=3), tiny_model("t", classes=3, seed=1),
        {"kl_loss": (LogitsDistillation(2.0), 0.5)}), (8, 8, 3)),
    CollaborativeDistiller: (lambda: CollaborativeDistiller(
        cmtkd_net(2, "s"), [cmtkd_net(4, "t4", seed=1), cmtkd_net(8, "t8", seed=2)]), (8, 8, 1)),
    PKKDDistiller: (lambda: PKKDDistiller(
        adder_resnet20((8, 8, 1), 3, blocks_per_stage=1),
        adder_resnet20((8, 8, 1), 3, layer="conv", blocks_per_stage=1)), (8, 8, 1)),
    BlockwiseModel: (lambda: BlockwiseModel(
        progressive_net(binary=True), progressive_net(), mode="lit", stage=2, feature_weight=0.4,
        kd_label_fraction=0.9, temperature=4.0, scale_by_temperature_squared=False),
        (6, 6, 1)),
}


def test_every_registered_distiller_has_a_factory_here():
    found = {cls for cls in _subclasses(TeacherStudent) if cls.__module__.startswith("kerasbnn.")}
    assert found == set(FACTORIES), "add the new distiller to FACTORIES"
    for cls in found:
        assert keras.saving.get_registered_name(cls) == f"kerasbnn>{cls.__name__}", cls


def _check_structure(outputs, classes):
    assert list(outputs)[:4] == KEYS
    logits = outputs["logits"]
    assert tuple(logits.shape)[-1] == classes
    sides = outputs["teacher_logits"]
    assert isinstance(sides, list) and sides
    assert all(tuple(z.shape) == tuple(logits.shape) for z in sides)
    students, teachers = outputs["student_features"], outputs["teacher_features"]
    assert isinstance(students, list) and isinstance(teachers, list)
    assert len(students) == len(teachers)
    for feature, per_side in zip(students, teachers):
        assert isinstance(per_side, list) and len(per_side) == len(sides)
        assert all(len(t.shape) == len(feature.shape) for t in per_side)


@pytest.mark.parametrize("cls", list(FACTORIES), ids=lambda cls: cls.__name__)
def test_call_returns_the_one_structure_and_the_loss_reads_it(cls):
    factory, shape = FACTORIES[cls]
    distiller = factory()
    x, y = _images(shape)
    for training in (False, True):
        outputs = distiller(x, training=training)
        _check_structure(outputs, 3)
    if cls is not TeacherStudent:  # the base leaves `loss_terms` to its subclasses
        loss = distiller.compute_loss(x, y, outputs, training=False)
        assert np.isfinite(float(ops.convert_to_numpy(loss)))


@pytest.mark.parametrize("cls", list(FACTORIES), ids=lambda cls: cls.__name__)
def test_get_config_from_config_round_trip(cls):
    factory, shape = FACTORIES[cls]
    distiller = factory()
    config = distiller.get_config()
    restored = cls.from_config(config)
    models = ("student", "teacher", "teachers")
    assert type(restored) is cls
    assert ({k: v for k, v in restored.get_config().items() if k not in models}
            == {k: v for k, v in config.items() if k not in models})
    assert [type(t) for t in restored.teachers] == [type(t) for t in distiller.teachers]
    assert restored.term_weights == distiller.term_weights
    x, _ = _images(shape)
    restored.set_weights(distiller.get_weights())
    np.testing.assert_allclose(ops.convert_to_numpy(restored(x, training=False)["logits"]),
                               ops.convert_to_numpy(distiller(x, training=False)["logits"]),
                               rtol=1e-5, atol=1e-5)

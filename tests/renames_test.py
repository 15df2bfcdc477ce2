"""Arguments renamed in earlier versions fail naming the new argument, not with Keras'
"Unrecognized keyword arguments" (kerasbnn.renames)."""

import keras
import pytest

from kerasbnn import renames
from kerasbnn.distill import (CollaborativeDistiller, MultiTeacherDistiller, PKKDDistiller,
                              ProgressiveDistiller)


def _model():
    return keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])


@pytest.mark.parametrize("cls, old, new", [
    (MultiTeacherDistiller, "alpha", "kl_weight"),
    (MultiTeacherDistiller, "beta", "feature_weight"),
    (MultiTeacherDistiller, "delta_lr_scale", "fusion_lr_scale"),
    (CollaborativeDistiller, "shared_layers", "feature_taps"),
    (CollaborativeDistiller, "gamma", "feature_weight"),
    (PKKDDistiller, "kd_weight", "kl_weight"),
    (ProgressiveDistiller, "alpha", "kd_label_fraction"),
    (ProgressiveDistiller, "ce_weight", "kd_label_fraction"),
])
def test_an_old_argument_name_names_the_new_one(cls, old, new):
    with pytest.raises(renames.RenamedArgumentError, match=f"{cls.__name__}: '{old}' is now "
                                                          f"'{new}'.*Write {new}=0.5"):
        cls(_model(), [_model()], **{old: 0.5})


def test_two_old_names_are_named_together():
    with pytest.raises(TypeError, match="'alpha' is now 'kl_weight'; 'beta' is now "
                                        "'feature_weight'"):
        MultiTeacherDistiller(_model(), [_model()], alpha=1.0, beta=0.5)

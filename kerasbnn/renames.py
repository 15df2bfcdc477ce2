"""Arguments renamed in earlier versions: a call that still uses an old name fails with a
message naming the new one, instead of Keras' generic "Unrecognized keyword arguments".

Commit 102d7f4 named every weight after its loss term (`ce_weight`, `kl_weight`,
`feature_weight`), every tap list `feature_taps` and every fusion learning-rate multiplier
`fusion_lr_scale`; the papers' letters (MAD's alpha/beta, CMT-KD's alpha/beta/gamma, the
thesis' alpha/beta) mean different terms in different classes, so each class lists its own.
"""

import functools


class RenamedArgumentError(TypeError):
    """An argument or config key was given under the name it had before it was renamed."""


def check_renamed(owner, given, renames):
    """Raises `RenamedArgumentError` if a key of `given` is an old name in `renames`
    (`{old: new}`), naming the new one and the value to pass."""
    old = [key for key in given if key in renames]
    if old:
        moves = "; ".join(f"{key!r} is now {renames[key]!r}" for key in old)
        fix = ", ".join(f"{renames[key]}={given[key]!r}" for key in old)
        raise RenamedArgumentError(f"{owner}: {moves} (one name per idea across kerasbnn). "
                                   f"Write {fix}.")


def renamed(**renames):
    """Class decorator: the class's `__init__` refuses each old keyword `old=` of
    `renames` (`old="new"`) with a `RenamedArgumentError` naming `new`."""

    def decorate(cls):
        init = cls.__init__

        @functools.wraps(init)
        def __init__(self, *args, **kwargs):
            check_renamed(cls.__name__, kwargs, renames)
            init(self, *args, **kwargs)

        cls.__init__ = __init__
        cls.renamed_arguments = dict(renames)
        return cls

    return decorate


#: Config keys renamed with the arguments they set (`kerasbnn.config` refuses the old ones).
CONFIG_KEYS = {"distill.alpha": "distill.kl_weight", "distill.beta": "distill.feature_weight"}

"""Named presets: measured, documented parts of a run config that a config names with
`preset: NAME`.

A preset is a nested dict of config values (a part of a `kerasbnn.config.RunConfig`) under
a name; the function that returns it says in its docstring what the values are, what
measured them and what was not measured. A config names it with the top-level key
`preset`: in a YAML or TOML file (`preset: binary_recipe`), on the command line
(`--set preset=binary_recipe`) or in the dict given to `kerasbnn.config.from_dict`. Its
values then sit under the config's own:

    the dataclass defaults < the preset < the config file < --set

A key the file or `--set` gives wins over the preset's; a section the file gives is merged
with the preset's section key by key, not replaced (`preset: binary_recipe` with
`student: {epochs: 2}` keeps the preset's `student.learning_rate`). `preset: null` (the
default) is no preset. An unknown name is refused with the closest one, before anything is
written. A run's saved `config.yaml` holds every resolved value and the preset's name, so it
reads back to the same config. The name itself is no step's input: the teacher cache's keys
and `--resume` read the resolved values alone.

Register a preset with `@preset("name")` on a function that returns its values.
"""

import copy
import difflib

from kerasbnn.config_values import ConfigError

__all__ = ["PRESETS", "binary_recipe", "describe", "preset", "resolve", "values"]

PRESETS = {}
"""Every preset's function by its name (`preset: NAME`), registered by `preset`."""


def preset(name):
    """Registers the decorated function, which returns a nested dict of config values, as
    the preset `name`; its docstring is the preset's documentation (its first line is what
    `describe` and the command line's help say)."""

    def register(function):
        if name in PRESETS and PRESETS[name] is not function:
            raise ValueError(f"A preset named {name!r} is already registered.")
        PRESETS[name] = function
        return function

    return register


def values(name):
    """A fresh copy of the nested dict of config values of the preset `name`.

    Raises:
        ConfigError: no preset has that name (the message names the closest one and
            every valid one).
    """
    if not isinstance(name, str) or name not in PRESETS:
        close = difflib.get_close_matches(str(name), list(PRESETS), n=1)
        hint = f" Did you mean {close[0]!r}?" if close else ""
        raise ConfigError(f"Unknown preset {name!r}.{hint} Valid presets: "
                          f"{', '.join(sorted(PRESETS))} (or null for none).")
    return copy.deepcopy(PRESETS[name]())


def _merge(base, top):
    """`base` with `top`'s keys over it; a mapping in both is merged key by key."""
    merged = dict(base)
    for key, value in top.items():
        below = merged.get(key)
        merged[key] = (_merge(below, value) if isinstance(below, dict) and isinstance(value, dict)
                       else value)
    return merged


def resolve(config_values):
    """The nested dict of a whole run config, `config_values`, with the values of the preset
    it names (its key `preset`) under its own; unchanged when it names none. The key
    `preset` stays, so the result records which preset it was made from.

    Raises:
        ConfigError: an unknown preset name.
    """
    name = config_values.get("preset")
    if name is None:
        return config_values
    return _merge(values(name), config_values)


def describe():
    """One line naming every preset and the first line of its documentation (the command
    line's help)."""
    listed = "; ".join(f"{name}: {PRESETS[name].__doc__.strip().splitlines()[0].rstrip('.')}"
                       for name in sorted(PRESETS))
    return (f"Presets (config key `preset`, e.g. --set preset=binary_recipe; the file and "
            f"--set override their values): {listed}.")


@preset("binary_recipe")
def binary_recipe():
    """The measured recipe that trains a binary ResNet-20 alone to its float teacher's accuracy.

    Sets:

    - `model.block: bireal`: one binary conv per real-valued shortcut (Bi-Real Net), for the
      teachers and the student alike, so that the student starts from its float teacher's
      weights (the library's default stays the thesis' `basic` block);
    - `student.init: float`: every student starts from the float teacher's weights, BatchNorm
      recomputed;
    - `student.learning_rate: 0.005`, `student.epochs: 16`: cosine-decayed Adam from a peak
      of 5e-3 to 0 over 16 epochs;
    - `teachers.float_epochs: 15`, `teachers.patience: 4`: the float teacher (cosine Adam at
      the default 2e-3) trained to its validation plateau, its best epoch kept;
    - `data.augment: false`, `data.val_split: 0.1`: no augmentation, 10% of the training
      images held out for validation (needed by `teachers.patience`).

    Measured (Fashion-MNIST, one seed unless said): in the ablation on validation
    (docs/benchmarks/recipe.md: width 0.5, 20,000 images, 4 student epochs) the `bireal`
    block gave +8.7 pt over `basic` for the binary student (+7.9 pt for `reactnet`), and a
    peak rate of 5e-3 +1.8 and +1.4 pt over 2e-3 on two seeds. At width 1 on the full split
    (docs/benchmarks/plateau.md) these settings gave a binary student with 92.03% on the test
    split against its float teacher's 91.79%, in about 31 minutes of student training on an
    idle 2-core machine.

    At width 0.5 (the same settings, one seed) the binary student scored 91.49% against its
    float teacher's 90.99%.

    Not measured: widths other than 1 and 0.5 at this budget; more than one seed at either
    width; `teachers.patience` itself (the width-1 run
    trained the float teacher all 15 epochs and kept the last; with patience 4 its
    validation peak, epoch 11, would have been kept and the student started from it);
    early stopping of the student (`student.patience`, off here); a longer schedule (the
    student's validation accuracy still rose at epoch 16); augmentation against none; any
    distillation method on top (the recipe is the student alone, `none`); datasets other
    than Fashion-MNIST. The methods a run trains (`distill.compare`; the recipe's student is
    the `none` arm) and the k-bit teachers they distil from (`teachers.bits`,
    `teachers.epochs`) are the config's.
    """
    return {
        "data": {"augment": False, "val_split": 0.1},
        "model": {"block": "bireal"},
        "teachers": {"float_epochs": 15, "patience": 4},
        "student": {"init": "float", "learning_rate": 0.005, "epochs": 16},
    }

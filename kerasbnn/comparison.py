"""Compared arms get the same student, the same start and the same budget.

A pipeline run that trains several methods side by side (`distill.compare`, or the baseline
`none` next to `distill.method`) reports their accuracies as differences: each arm must then
train the same network, from the same weights, on the same number of training images, or the
difference measures the start or the budget instead of the method (measured: a float start
alone was worth 69.0% against 61.4% from random weights in a probe).

- The same network from the same weights: every arm's `kerasbnn.methods.student_network`
  (builder, bits, binary scheme, block, `student.init`) must equal the baseline's, or
  `check_comparison` refuses the config before anything is written, naming the arm, the
  difference and the fix. Arms that build their student through `StudentJob.student()` (or
  `StudentJob.started`: cmtkd, progressive with `student.init: float`) start from the very
  same weights on the run's seed.
- The same images: `kerasbnn.methods.student_epochs` counts the epochs of training images that
  pass through an arm's student in all its phases (progressive: its block-wise phases, then
  `student.epochs`). An arm that trains `student.epochs` (twice that with `two_step`) trains as
  many epochs as the longest arm instead (`arm_config`), and each arm's results record
  `images`, which the report shows next to its minutes.
"""

import dataclasses

from kerasbnn import methods
from kerasbnn.config import ConfigError
from kerasbnn.run import layout

__all__ = ["arm_config", "check_comparison", "reference", "unequal_images"]

#: How to make an arm's student equal to the baseline's, per differing key.
FIXES = {
    "arch": "it trains another network, so compare it in a run of its own (e.g. "
            "distill.compare: [{name}])",
    "block": "set distill.{name}.block to {expected!r} (null: model.arch's own block, which "
             "the other arms train)",
    "init": "{name} starts from the float teacher whatever student.init: set student.init: "
            "float",
    "bits": "set distill.{name}.student_bits: 1, or compare the {value}-bit student in a run "
            "of its own",
}


def reference(names):
    """The arm the others are held to: `none` when compared, else the first."""
    return "none" if "none" in names else names[0]


def check_comparison(config, names):
    """Raises `ConfigError` unless every arm of `names` trains the baseline's network from the
    baseline's weights (`kerasbnn.methods.student_network`) and can be given the same images
    (`arm_config`). A single arm is not a comparison: nothing to check."""
    if len(names) < 2:
        return
    base = reference(names)
    expected = methods.student_network(base, config)
    for name in names:
        network = methods.student_network(name, config)
        for key in sorted(set(network) | set(expected)):
            value, wanted = network.get(key), expected.get(key)
            if value != wanted:
                fix = FIXES.get(key, "remove distill.{name}.builder_kwargs.{key}")
                raise ConfigError(
                    f"The compared arms {', '.join(names)} must train the same student from "
                    f"the same weights, but {name}'s has {key}={value!r} where {base}'s has "
                    f"{wanted!r}: " + fix.format(name=name, key=key, value=value,
                                                   expected=wanted) + ".")
    for name in names:
        arm_config(config, name, names)


def arm_config(config, name, names, print_fn=None):
    """The config arm `name` of the comparison `names` trains with: `config` itself, or, when
    another arm puts more epochs of images through its student (`student_epochs`), `config`
    with `student.epochs` raised to match (the arm's schedule, cosine decay included, then
    spans them all). Says so through `print_fn`.

    Raises:
        ConfigError: the arm's own schedule cannot be stretched to the longest arm's images
            (its method sets its epochs, or two steps cannot split them evenly).
    """
    target = max(methods.student_epochs(n, config) for n in names)
    own = methods.student_epochs(name, config)
    if own == target:
        return config
    longest = next(n for n in names if methods.student_epochs(n, config) == target)
    steps = own // config.student.epochs
    if methods.METHODS.get(name).epochs is not None or own % config.student.epochs or (
            target % steps):
        raise ConfigError(
            f"{longest} puts {target} epochs of images through its student, {name} {own}, and "
            f"{name}'s schedule cannot be stretched to {target}: compare them in runs of "
            "their own, with student.epochs set to give each the same images.")
    epochs = target // steps
    if print_fn is not None:
        print_fn(f"[budget] {name} trains {epochs} epoch(s) instead of student.epochs="
                 f"{config.student.epochs}: the images {longest} puts through its student "
                 f"({target} epochs of them)")
    return dataclasses.replace(config, student=dataclasses.replace(config.student,
                                                                   epochs=epochs))


def unequal_images(run, names):
    """A warning (a line ending in the fix) when the finished arms `names` of `run` record
    different `images` (a resumed run can reuse a student trained before a change of another
    arm's budget, e.g. progressive's `epochs_per_stage`), else None."""
    images = {n: (run.read_json(run.student_step(n)) or {}).get("images") for n in names}
    if len(names) < 2 or len(set(images.values())) < 2:
        return None
    counts = ", ".join(f"{n} {v if v is None else f'{v:,}'}" for n, v in images.items())
    return (f"[budget] warning: the compared arms put unequal numbers of images through their "
            f"students ({counts}); remove {layout.student('<arm>')} of the arms to retrain "
            "and resume.")

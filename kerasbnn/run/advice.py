"""What a run tells the user to do after a loss became NaN or infinite, or diverged: the
advice that the training's checks (`kerasbnn.training.StopOnNonFiniteLoss`,
`StopOnDivergence`) append to their error, for the teachers and the students alike."""

import dataclasses

from kerasbnn import config as run_config


def nan_advice(config, section):
    """What to do after a non-finite or diverging loss in a step trained with
    `config.<section>`: a function of what went wrong. A loss term that overflowed only once
    scaled by its weight (the distiller names the weight, e.g. `feature_weight=1e+38`) points
    to `distill.<weight>`; anything else to `<section>.learning_rate`."""
    rate = getattr(config, section).learning_rate
    weights = [f.name for f in dataclasses.fields(config.distill) if f.name.endswith("_weight")]

    def advice(what):
        named = [key for key in weights if f"{key}=" in what]
        if named:
            value = getattr(config.distill, named[0])
            default = getattr(run_config.DistillConfig(), named[0])
            fix = (f"Lower distill.{named[0]} (now {value:g}; the default is {default:g}), e.g. "
                   f"--set distill.{named[0]}={default:g}")
        else:
            fix = (f"Lower {section}.learning_rate (now {rate:g}), e.g. --set "
                   f"{section}.learning_rate={rate / 10:g}")
        switch = (" (or set divergence_factor: null to turn this check off)"
                  if "StopOnDivergence" in what else "")
        return (f"{fix}, and run the same command again with --resume{switch}: finished steps "
                "are kept.")

    return advice

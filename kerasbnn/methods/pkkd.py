"""`pkkd`: an adder network distilled from its CNN twin by kernel-based progressive KD."""

from kerasbnn.methods import method
from kerasbnn.methods.progressive import own_runner


def _option_keys():
    from kerasbnn.distill import pkkd

    return pkkd.PKKD_RUN_DEFAULTS


@method("pkkd", options=_option_keys, depends_on=("distill.options",), zoo=False,
        distributes=False)
def train_pkkd(job):
    """PKKD's adder student (`kerasbnn.distill.run_pkkd`, `distill.options`)."""
    from kerasbnn.distill import run_pkkd

    return own_runner(job, "pkkd", run_pkkd, dict(job.config.distill.options))

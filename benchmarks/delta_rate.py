"""MAD's delta rate chosen on the validation split, for any pipeline config.

MAD's importance weights delta (eqs. 13-14 of the MAD paper) are the softmax of logits
trained by SGD at `distill.delta_learning_rate`. How far they move is set by that rate and by
how much the teachers disagree: two teachers that agree closely give delta almost no gradient,
so at a small rate it stays where it started. The rate is a hyper-parameter like any other:
this script trains the config's MAD student once per rate (each in its own run directory, the
same seed, start and batches; the teachers trained once and cached under `--root`), and keeps
the rate whose student, as kept (the last epoch), scores best on the validation split (ties:
the smaller rate). The test split only reports. It prints, per rate, the validation and test
accuracy and delta at the end, then the choice.

The config must hold `data.val_split` (the choice is made there) and teachers MAD can fuse.

Resumable: run the same command again and finished rates are read back, a killed one
continues from its last epoch.

    python benchmarks/delta_rate.py --config examples/configs/demo.yaml \
        --rates 0.01,0.1,1 --root /work/runs/demo_delta
"""

import argparse
import json
import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasbnn import config as run_config  # noqa: E402
from kerasbnn import pipeline  # noqa: E402


def final_delta(results):
    """Delta at the logits after training, one value per teacher in the order of
    `teachers.bits`, from a student's results (`deltas`, which the multi-teacher methods
    write); None for a student without one."""
    return results.get("deltas", {}).get("logits")


def mad_student(config, print_fn):
    """Trains (or reads back) `config`'s MAD student; its results with `delta` added."""
    mad = pipeline.run_compare(config, resume=os.path.isdir(config.run_dir),
                               print_fn=print_fn)["students"]["mad"]
    return {**mad, "delta": final_delta(mad)}


def choose(config_for, rates, *, train=mad_student, print_fn=print, quiet=print):
    """Delta's rate chosen on validation: `train(config_for(rate), quiet)` for each of
    `rates` (a MAD student's results: `val_accuracy`, `accuracy`, `delta`); returns the rate
    with the best validation accuracy (ties: the smaller rate) and `{rate: results}`."""
    tries = {}
    for rate in rates:
        tries[rate] = train(config_for(rate), quiet)
        delta = tries[rate].get("delta")
        print_fn(f"delta rate {rate:g}: validation {100 * tries[rate]['val_accuracy']:.2f}%, "
                 f"test {100 * tries[rate]['accuracy']:.2f}%, delta at the end "
                 f"{'/'.join(f'{v:.3f}' for v in delta) if delta else '-'}")
    best = max(tries, key=lambda r: (tries[r]["val_accuracy"], -r))
    return best, tries


def config_for_rate(args, rate):
    """`--config` with `--set`, MAD alone, delta's rate `rate`, its own run directory under
    `--root` and the teachers cached in `--root/teacher_cache`."""
    overrides = [*args.set, "distill.compare=[mad]", f"distill.delta_learning_rate={rate}",
                 f"run_dir={os.path.join(args.root, f'rate{rate:g}')}",
                 f"teachers.cache_dir={os.path.join(args.root, 'teacher_cache')}"]
    config = run_config.load(args.config, overrides)
    if not config.data.val_split:
        raise SystemExit(f"{args.config}: delta's rate is chosen on the validation split; "
                         "set data.val_split (e.g. --set data.val_split=0.1).")
    return config


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="a pipeline config (YAML or TOML)")
    parser.add_argument("--rates", default="0.01,0.1,1", help="delta's SGD rates to try")
    parser.add_argument("--root", required=True, help="run directories, one per rate")
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                        help="a config override applied to every rate")
    parser.add_argument("--out", help="JSON of the tries and the choice")
    args = parser.parse_args(argv)
    args.rates = [float(r) for r in args.rates.split(",")]
    return args


def main(argv=None, print_fn=print):
    args = parse_args(argv)
    config_for_rate(args, args.rates[0])  # a config without a validation split stops here
    best, tries = choose(lambda rate: config_for_rate(args, rate), args.rates,
                         print_fn=print_fn, quiet=lambda *_: None)
    print_fn(f"delta's SGD rate chosen on validation: {best:g}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump({"config": args.config, "set": args.set, "rate": best,
                       "tries": {str(r): t for r, t in tries.items()}}, f, indent=2, default=str)
    return best, tries


if __name__ == "__main__":
    main(sys.argv[1:])

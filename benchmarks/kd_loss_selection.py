"""Which KD loss for the evidence run? Chosen on the validation split, never on the test split.

Issue #17's protocol: beta (feature_weight), T and alpha are chosen on a validation split
carved from the training images. For each seed, every variant trains one binary student with
`kd` from the float teacher through the pipeline's comparison (`kerasbnn.pipeline.run_compare`),
next to the student without distillation (`none`) on the same seed (same initial weights, same
batches): the paired validation differences pick the loss that `distill_evidence.py --set`
then gives every arm. The budget is the evidence run's (ResNet-20 width 0.5, 20,000 training
images of which 10% validation, float teacher 8 epochs, students 4 epochs, Adam 2e-3).

    python benchmarks/kd_loss_selection.py                  # 2 seeds, every variant
    python benchmarks/kd_loss_selection.py --seeds 0 --variants none kd_logits

It prints one JSON line per student and, at the end, each variant's paired validation (and,
for the record only, test) differences to `none`, and writes them to `--out`.
"""

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

from kerasbnn import config as run_config  # noqa: E402
from kerasbnn import pipeline  # noqa: E402

#: variant -> (method, distill settings)
VARIANTS = {
    "none": ("none", {}),
    "kd_default": ("kd", {}),  # T = 1, logits and hints (feature_weight 0.2, mean reduction)
    "kd_logits": ("kd", {"feature_weight": 0.0}),
    "kd_T4": ("kd", {"feature_weight": 0.0, "temperature": 4.0, "temperature_squared": True}),
    "kd_noce": ("kd", {"feature_weight": 0.0, "ce_weight": 0.0}),  # ReActNet's loss alone
}


def student_config(root, name, seed, epochs):
    method, distill = VARIANTS[name]
    return run_config.from_dict({
        "run_dir": os.path.join(root, f"{name}_e{epochs}_s{seed}"), "seed": seed,
        "data": {"train_limit": 20000, "batch_size": 128, "val_split": 0.1, "split_seed": 0},
        "model": {"arch": "resnet20", "width_multiplier": 0.5},
        "teachers": {"bits": [32], "quantizer": "lsq", "epochs": 2, "float_epochs": 8,
                     "learning_rate": 2e-3, "seed": 0,
                     "cache_dir": os.path.join(root, "teacher_cache")},
        "student": {"epochs": epochs, "learning_rate": 2e-3, "init": "float"},
        "distill": {"compare": [method], **distill},
    })


def paired(rows):
    """Per variant: the paired differences to `none` (points) on validation and test."""
    base = {r["seed"]: r for r in rows if r["variant"] == "none"}
    out = {}
    for name in dict.fromkeys(r["variant"] for r in rows if r["variant"] != "none"):
        mine = [r for r in rows if r["variant"] == name and r["seed"] in base]
        val = [100 * (r["val"] - base[r["seed"]]["val"]) for r in mine]
        test = [100 * (r["test"] - base[r["seed"]]["test"]) for r in mine]
        out[name] = {"seeds": [r["seed"] for r in mine], "val_diff": val, "test_diff": test,
                     "val_mean": statistics.mean(val) if val else None}
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--root", default="runs/kd_loss_selection")
    parser.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                      "kd_loss_selection.json"))
    args = parser.parse_args(argv)
    rows = []
    for seed in args.seeds:
        for name in args.variants:
            values = student_config(args.root, name, seed, args.epochs)
            start = time.time()
            result = pipeline.run_compare(values, resume=os.path.isdir(values.run_dir),
                                          print_fn=lambda *_: None)
            student = result["students"][VARIANTS[name][0]]
            rows.append({"variant": name, "seed": seed, "epochs": args.epochs,
                         "test": student["accuracy"], "val": student.get("val_accuracy"),
                         "seconds": time.time() - start,
                         "teacher": result["teachers"][32].get("accuracy")})
            print(json.dumps(rows[-1]), flush=True)
    summary = paired(rows)
    best = max(summary, key=lambda k: summary[k]["val_mean"]) if summary else None
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"args": vars(args), "variants": VARIANTS, "rows": rows, "paired": summary,
                   "best_on_validation": best}, f, indent=2)
    for name, s in summary.items():
        print(f"{name}: validation - none per seed {', '.join(f'{v:+.2f}' for v in s['val_diff'])}"
              f" (mean {s['val_mean']:+.2f}); test {', '.join(f'{v:+.2f}' for v in s['test_diff'])}")
    print(f"best on validation: {best} {VARIANTS.get(best, ('', {}))[1]}")


if __name__ == "__main__":
    main(sys.argv[1:])

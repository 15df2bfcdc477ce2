"""What a changed config means for the steps a run directory already holds (`--resume`).

Each step of a run leaves an artefact (a `.keras` file, a conversion result) and, while it
trains, a `BackupAndRestore` backup. A step depends on some config keys; `plan` compares the
config a run directory was started with and the new one, step by step:

- a finished step whose keys did not change is reused;
- a finished step whose keys changed is refused, naming the keys and the fix, unless it is
  cheap and has nothing downstream (conversion and latency: `convert.*`, `benchmark.*`),
  which is redone;
- a step cut mid-training continues from its backup when only its `epochs` or
  `learning_rate` changed (more epochs for a later step, a lower rate after a NaN), and is
  refused otherwise;
- a `learning_rate` change never invalidates a finished step: its weights stay, and its
  results JSON records the rate it was trained with.

`run_dir` and `distribute` are no step's input (the same training, elsewhere or on more
devices).
"""

import dataclasses
import os
import re

#: Keys every training step depends on ("data." is the whole section).
TRAINING = ("seed", "data.", "model.")
#: Keys the teachers depend on, as a group (the distilled student reads them all).
TEACHERS = ("teachers.quantizer", "teachers.epochs", "teachers.learning_rate",
            "teachers.float_epochs", "teachers.bn_batches", "teachers.seed", "teachers.init")
#: Keys that may change for a step cut mid-training: it continues from its backup.
CONTINUABLE = ("epochs", "learning_rate")


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a run and the config keys its artefact depends on.

    Attributes:
        name: how messages call it, e.g. `"teacher w2a2"`.
        artifact: its finished artefact, relative to the run directory.
        backup: its `BackupAndRestore` directory under `backup/` (None: not a training step).
        keys: dotted config keys; one ending in "." stands for a whole section.
        redo: True if a change of `keys` redoes the step instead of refusing it.
        downstream: artefacts made from this one (relative paths), removed with it.
    """

    name: str
    artifact: str
    backup: str = None
    keys: tuple = ()
    redo: bool = False
    downstream: tuple = ()

    def depends_on(self, key):
        return any(key == k or (k.endswith(".") and key.startswith(k)) for k in self.keys)


def known_steps(root):
    """Every step whose artefact or backup could be in run directory `root`."""
    bits = set()
    for folder, pattern in (("teachers", r"w(\d+)a\1\.keras"), ("backup", r"teacher_w(\d+)a\1")):
        if os.path.isdir(os.path.join(root, folder)):
            bits |= {int(m.group(1)) for name in os.listdir(os.path.join(root, folder))
                     if (m := re.fullmatch(pattern, name))}
    float_conversion = ("results/convert_float_teacher.json",)
    steps = [Step(f"teacher w{b}a{b}", f"teachers/w{b}a{b}.keras", f"teacher_w{b}a{b}",
                  (*TRAINING, *TEACHERS), downstream=float_conversion * (b == 32))
             for b in sorted(bits, reverse=True)]
    from kerasbnn import methods

    names = methods.METHODS.keys()
    steps += [Step(f"student {name}", f"students/{name}.keras", f"student_{name}",
                   methods.config_keys(name), downstream=(f"results/convert_{name}.json",))
              for name in names]
    steps += [Step(f"convert {name}", f"results/convert_{name}.json", None,
                   ("convert.", "benchmark."), redo=True)
              for name in ("float_teacher", *names)]
    return steps


def flatten(config):
    """`{dotted key: value}` of a config dataclass (dict-valued fields stay whole)."""
    flat = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            flat.update({f"{field.name}.{k}": v for k, v in flatten(value).items()})
        else:
            flat[field.name] = value
    return flat


def changed_keys(previous, config):
    """`{key: (old, new)}` for every key whose value differs, `run_dir` and `distribute` aside."""
    old, new = flatten(previous), flatten(config)
    return {k: (old[k], new[k]) for k in new
            if old.get(k) != new[k] and k not in ("run_dir", "distribute")}


@dataclasses.dataclass
class Plan:
    """What resuming a run directory with a (changed) config does.

    Attributes:
        changes: `{key: (old, new)}`.
        reused: finished steps kept as they are.
        redo: finished steps to redo (their artefacts are removed by `apply`).
        continued: steps cut mid-training that continue from their backup.
        conflicts: `[(step, keys, paths to remove)]` for the changes that are refused.
    """

    root: str
    changes: dict
    reused: list = dataclasses.field(default_factory=list)
    redo: list = dataclasses.field(default_factory=list)
    continued: list = dataclasses.field(default_factory=list)
    conflicts: list = dataclasses.field(default_factory=list)


def _soft(key, finished):
    """Whether changing `key` leaves a step valid: learning rates always, epochs mid-training."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf == "learning_rate" or (not finished and leaf in CONTINUABLE)


def plan(root, previous, config):
    """Compares each step found in `root` against the keys that changed from `previous`."""
    result = Plan(root, changed_keys(previous, config))
    for step in known_steps(root):
        finished = os.path.exists(os.path.join(root, step.artifact))
        backup = step.backup and os.path.join(root, "backup", step.backup)
        if not finished and not (backup and os.path.isdir(backup)):
            continue
        keys = [k for k in result.changes if step.depends_on(k)]
        hard = [k for k in keys if not _soft(k, finished)]
        if not hard:
            (result.reused if finished else result.continued).append(step)
        elif finished and step.redo:
            result.redo.append((step, hard))
        else:
            paths = [os.path.join(root, p) for p in (step.artifact, *step.downstream)
                     if os.path.exists(os.path.join(root, p))]
            result.conflicts.append((step, hard, paths if finished else [backup]))
    return result


def _describe(changes, keys):
    return ", ".join(f"{k} {changes[k][0]!r} -> {changes[k][1]!r}" for k in keys)


def refusal(result):
    """The message for a plan with conflicts: the keys, the steps, and the ways out."""
    keys = sorted({k for _, ks, _ in result.conflicts for k in ks})
    steps = ", ".join(step.name for step, _, _ in result.conflicts)
    paths = " ".join(path for _, _, step_paths in result.conflicts for path in step_paths)
    return (
        f"--resume cannot apply {_describe(result.changes, keys)} to {result.root}: "
        f"the steps already done there ({steps}) were made with the old "
        f"value{'s' if len(keys) > 1 else ''}. Either keep the old value"
        f"{'s' if len(keys) > 1 else ''}, or start a new run (--set run_dir=runs/new), or "
        f"remove what the change invalidates and resume: rm -r {paths}"
    )


def report(result, print_fn):
    """Prints what the resumed run reuses, continues and redoes, and why."""
    if result.reused:
        print_fn(f"[resume] reusing the finished steps: {', '.join(s.name for s in result.reused)}")
    for step in result.continued:
        print_fn(f"[resume] {step.name} continues from its last finished epoch "
                 f"(backup/{step.backup})")
    if result.redo:
        keys = sorted({k for _, ks in result.redo for k in ks})
        print_fn(f"[resume] redoing {', '.join(s.name for s, _ in result.redo)} "
                 f"({_describe(result.changes, keys)})")
    rates = [k for k in result.changes if k.endswith("learning_rate")]
    if rates and result.reused:
        print_fn(f"[resume] {_describe(result.changes, rates)}: finished steps keep the weights "
                 "they were trained with (their results/*.json record the rate); the steps "
                 "still to train use the new value")


def apply(result):
    """Removes the artefacts of the steps to redo, so that a later resume redoes them too."""
    for step, _ in result.redo:
        path = os.path.join(result.root, step.artifact)
        if os.path.exists(path):
            os.remove(path)

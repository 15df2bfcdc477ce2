"""What a changed config means for the steps a run directory already holds (`--resume`).

Each step of a run leaves an artefact (a `.keras` file, a conversion result) and, while it
trains, an `EpochBackup`. A step depends on some config keys; `plan` compares the
config a run directory was started with and the new one, step by step:

- a finished step whose keys did not change is reused;
- a finished step whose keys changed is refused, naming the keys and the fix, unless it is
  cheap and has nothing downstream (conversion and latency: `convert.*`, `benchmark.*`),
  which is redone;
- a step cut mid-training continues from its backup when only its `epochs`,
  `learning_rate` or loss weights (`distill.*_weight`) changed (more epochs for a later
  step, a lower rate or weight after a NaN or a divergence), and is refused otherwise;
- a `learning_rate` change never invalidates a finished step: its weights stay, and its
  results JSON records the rate it was trained with;
- a step counts as finished only when its artefact and the files it writes with it (its
  results JSON; a conversion's `.tflite`) are all there and intact (`damage`): a truncated
  or corrupt one is removed, with a notice, and the step is done again (from its backup
  when it has one).

A run directory that holds steps but no `config.yaml` is refused (`orphans`): what they were
made with is unknown.

`run_dir` and `distribute` are no step's input (the same training, elsewhere or on more
devices).
"""

import dataclasses
import json
import os
import zipfile

from kerasbnn.config import SECTIONS
from kerasbnn.run import layout

#: Keys every training step depends on ("data." is the whole section).
TRAINING = ("seed", "data.", "model.")
#: Keys the teachers depend on, as a group (the distilled student reads them all).
TEACHERS = ("teachers.quantizer", "teachers.epochs", "teachers.learning_rate",
            "teachers.float_epochs", "teachers.bn_batches", "teachers.seed", "teachers.init")
#: Keys that may change for a step cut mid-training: it continues from its backup (and any
#: loss weight, a key ending in "_weight": the fix a NaN of an overflowing term asks for).
CONTINUABLE = ("epochs", "learning_rate")


@dataclasses.dataclass(frozen=True)
class Step:
    """One step of a run and the config keys its artefact depends on.

    Attributes:
        name: how messages call it, e.g. `"teacher w2a2"`.
        artifact: its finished artefact, relative to the run directory.
        backup: the step's name, whose `EpochBackup` is `kerasbnn.run.layout.backup(backup)`
            (None: not a training step).
        keys: dotted config keys; one ending in "." stands for a whole section.
        redo: True if a change of `keys` redoes the step instead of refusing it.
        downstream: artefacts made from this one (relative paths), removed with it.
        also: other files the step writes (relative paths) that must be there and intact
            for it to count as finished.
    """

    name: str
    artifact: str
    backup: str = None
    keys: tuple = ()
    redo: bool = False
    downstream: tuple = ()
    also: tuple = ()

    def depends_on(self, key):
        return any(key == k or (k.endswith(".") and key.startswith(k)) for k in self.keys)


def known_steps(root, students):
    """Every step whose artefact or backup could be in run directory `root`; `students` is
    `{method: the config keys its student depends on}` (`kerasbnn.methods.student_keys()`)."""
    conversions = {name: layout.convert_step(name) for name in (layout.FLOAT_TEACHER, *students)}
    float_conversion = (layout.results(conversions[layout.FLOAT_TEACHER]),)
    steps = [Step(f"teacher w{b}a{b}", layout.teacher(b), layout.teacher_step(b),
                  (*TRAINING, *TEACHERS), downstream=float_conversion * (b == 32),
                  also=(layout.results(layout.teacher_step(b)),))
             for b in sorted(layout.teacher_bits(root), reverse=True)]
    names = sorted(students)
    steps += [Step(f"student {name}", layout.student(name), layout.student_step(name),
                   students[name], downstream=(layout.results(conversions[name]),),
                   also=(layout.results(layout.student_step(name)),))
              for name in names]
    steps += [Step(f"convert {name}", layout.results(conversions[name]), None,
                   ("convert.", "benchmark."), redo=True, also=(layout.tflite(name),))
              for name in (layout.FLOAT_TEACHER, *names)]
    return steps


def damage(path):
    """Why the artefact at `path` cannot be used (missing, truncated, corrupt), or None.

    A `.keras` file is a zip archive whose every member must read back (CRC checked), a
    `.json` file must parse, any other file must be non-empty."""
    if not os.path.isfile(path):
        return "missing"
    try:
        if path.endswith(".keras"):
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            return None if bad is None else f"corrupt: its member {bad} does not read back"
        if path.endswith(".json"):
            with open(path) as f:
                json.load(f)
            return None
        return None if os.path.getsize(path) > 0 else "empty"
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as error:
        return f"truncated or corrupt ({type(error).__name__}: {error})"


def _state(root, step):
    """`(finished, damaged)`: whether every file of `step` is intact, and `[(path, why)]` for
    those that make it unusable. A missing artefact means the step did not finish (what it
    wrote before, e.g. its results JSON, is written again); a present artefact with a
    missing or damaged companion, or a damaged artefact, is damage."""
    why = {path: damage(path) for path in
           (os.path.join(root, p) for p in (step.artifact, *step.also))}
    if not any(why.values()):
        return True, []
    present = {path: reason for path, reason in why.items() if reason != "missing"}
    artifact = os.path.join(root, step.artifact)
    if artifact not in present:
        return False, [(p, r) for p, r in present.items() if r is not None]
    return False, [(path, reason) for path, reason in why.items() if reason is not None]


def orphans(root, students):
    """The artefacts and backups of the steps in `root` (absolute paths; `students` as in
    `known_steps`): refused when the run directory has no `config.yaml` that says what they
    were made with."""
    found = []
    for step in known_steps(root, students):
        paths = [os.path.join(root, p) for p in (step.artifact, *step.also)]
        if step.backup:
            paths.append(os.path.join(root, layout.backup(step.backup)))
        found += [p for p in paths if os.path.exists(p) and p not in found]
    return found


def flatten(config):
    """`{dotted key: value}` of a config dataclass (dict-valued fields stay whole; a method's
    section `distill.<method>` is one key, present when the config gives it)."""
    flat = {}
    for field in dataclasses.fields(config):
        value = getattr(config, field.name)
        if dataclasses.is_dataclass(value):
            flat.update({f"{field.name}.{k}": v for k, v in flatten(value).items()})
        elif field.metadata.get(SECTIONS):
            flat.update({k: v for k, v in value.items() if v})
        else:
            flat[field.name] = value
    return flat


def changed_keys(previous, config):
    """`{key: (old, new)}` for every key whose value differs, `run_dir` and `distribute` aside
    (a method's section given in one config only: None in the other)."""
    old, new = flatten(previous), flatten(config)
    return {k: (old.get(k), new.get(k)) for k in dict.fromkeys([*new, *old])
            if old.get(k) != new.get(k) and k not in ("run_dir", "distribute")}


@dataclasses.dataclass
class Plan:
    """What resuming a run directory with a (changed) config does.

    Attributes:
        changes: `{key: (old, new)}`.
        reused: finished steps kept as they are.
        redo: finished steps to redo (their artefacts are removed by `apply`).
        continued: steps cut mid-training that continue from their backup.
        conflicts: `[(step, keys, paths to remove)]` for the changes that are refused.
        damaged: `[(step, [(path, why)])]`: steps whose files are truncated or corrupt,
            done again (`apply` removes the files and what was made from them).
    """

    root: str
    changes: dict
    reused: list = dataclasses.field(default_factory=list)
    redo: list = dataclasses.field(default_factory=list)
    continued: list = dataclasses.field(default_factory=list)
    conflicts: list = dataclasses.field(default_factory=list)
    damaged: list = dataclasses.field(default_factory=list)


def _soft(key, finished):
    """Whether changing `key` leaves a step valid: learning rates always; epochs and loss
    weights mid-training."""
    leaf = key.rsplit(".", 1)[-1]
    return leaf == "learning_rate" or (
        not finished and (leaf in CONTINUABLE or leaf.endswith("_weight")))


def plan(root, previous, config, students):
    """Compares each step found in `root` against the keys that changed from `previous`
    (`students` as in `known_steps`)."""
    result = Plan(root, changed_keys(previous, config))
    redone = set()  # artefacts made from a damaged step's: done again with it
    for step in known_steps(root, students):
        finished, damaged = _state(root, step)
        if damaged:
            result.damaged.append((step, damaged))
            redone |= set(step.downstream)
        finished = finished and step.artifact not in redone
        backup = step.backup and os.path.join(root, layout.backup(step.backup))
        if not finished and not (backup and os.path.isdir(backup) and os.listdir(backup)):
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
    for step, damaged in result.damaged:
        files = ", ".join(f"{os.path.relpath(path, result.root)} is {why}" for path, why in damaged)
        print_fn(f"[resume] {step.name} is done again: {files}")
    if result.reused:
        print_fn(f"[resume] reusing the finished steps: {', '.join(s.name for s in result.reused)}")
    for step in result.continued:
        print_fn(f"[resume] {step.name} continues from its last finished epoch "
                 f"({layout.backup(step.backup)})")
    if result.redo:
        keys = sorted({k for _, ks in result.redo for k in ks})
        print_fn(f"[resume] redoing {', '.join(s.name for s, _ in result.redo)} "
                 f"({_describe(result.changes, keys)})")
    rates = [k for k in result.changes if k.endswith("learning_rate")]
    if rates and result.reused:
        print_fn(f"[resume] {_describe(result.changes, rates)}: finished steps keep the weights "
                 f"they were trained with (their {layout.results('*')} record the rate); the "
                 "steps still to train use the new value")


def apply(result):
    """Removes the artefacts of the steps to redo and the files of damaged steps (with what
    was made from them), so that a later resume redoes them too."""
    for step, _ in result.redo:
        path = os.path.join(result.root, step.artifact)
        if os.path.exists(path):
            os.remove(path)
    for step, _ in result.damaged:
        for path in (step.artifact, *step.also, *step.downstream):
            if os.path.isfile(os.path.join(result.root, path)):
                os.remove(os.path.join(result.root, path))

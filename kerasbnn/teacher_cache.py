"""Teachers cached across runs, under a key made of everything that changes them.

A teacher is the same network whenever the settings it was made from are the same: the
architecture and its options, the bit width, the quantizer, the training budget, the data
settings, the teachers' seed and, for a k-bit teacher, the float teacher it started from
(through that teacher's own key), or, with `teachers.init: random`, its own start (its seed). `teacher_key` hashes exactly those settings, so a changed
setting gives a new key (the teacher is trained again) and an unchanged one finds the stored
teacher (it is loaded). `teachers.cache_dir` turns the cache on; the evidence benchmark uses
it to train its teachers once and share them between seeds.

Each entry is two files: `<key>.keras` (the model) and `<key>.json` (the settings the key was
made from, and the teacher's results: accuracies, seconds).
"""

import hashlib
import json
import os
import shutil

from kerasbnn.binarization.builder import file_digest, is_model_file
from kerasbnn.resume import damage

__all__ = ["RECIPE", "load", "store", "teacher_key"]

RECIPE = 2
"""The version of the teachers' recipe, part of every cache key: raise it when the code changes
what a teacher is. 2: the k-bit `bireal` and `reactnet` blocks quantize their conv inputs on a
signed grid (Bi-Real's after its hard_tanh), where 1 clipped every negative input to 0."""


def teacher_seed(config, bits=32):
    """The seed the `bits`-bit teacher trains with: `teachers.seed`, else the run's `seed`;
    plus `bits` for a k-bit teacher trained from its own start (`teachers.init: random`)."""
    seed = config.seed if config.teachers.seed is None else config.teachers.seed
    return seed + bits if bits != 32 and config.teachers.init == "random" else seed


def _settings(config, bits):
    t, d, m = config.teachers, config.data, config.model
    settings = {
        "recipe": RECIPE, "arch": m.arch, "width_multiplier": m.width_multiplier,
        "bn_momentum": m.bn_momentum, "bits": bits, "learning_rate": t.learning_rate,
        "seed": teacher_seed(config, bits),
        "data": {"name": d.name, "batch_size": d.batch_size, "train_limit": d.train_limit,
                 "augment": d.augment, "val_split": d.val_split, "split_seed": d.split_seed},
    }
    if m.block is not None:  # absent otherwise: caches written before it existed stay valid
        settings["block"] = m.block
    if t.patience is not None:  # likewise
        settings["patience"] = t.patience
    if is_model_file(m.arch):  # the file's content, not only its name
        settings["arch_sha256"] = file_digest(m.arch)
    if bits == 32 or t.init == "random":
        settings["epochs"] = t.float_epochs or t.epochs
        if bits != 32:
            settings.update(quantizer=t.quantizer, init="random")
    else:
        settings.update(quantizer=t.quantizer, epochs=t.epochs, bn_batches=t.bn_batches,
                        float_teacher=teacher_key(config, 32)[0])
    return settings


def teacher_key(config, bits):
    """`(key, settings)`: the cache key of the `bits`-bit teacher of `config` (e.g.
    `resnet20_w8a8_1f0c...`) and the settings dict it hashes."""
    settings = _settings(config, bits)
    digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
    return f"{config.model.arch}_w{bits}a{bits}_{digest}", settings


def load(cache_dir, key, model_path):
    """Copies the cached teacher `key` to `model_path`; returns its results dict, or None
    when the cache holds no such teacher, or one whose files do not read back (truncated or
    corrupt: the teacher is trained again, and `store` replaces them)."""
    if not cache_dir:
        return None
    source, record = (os.path.join(cache_dir, f"{key}.{ext}") for ext in ("keras", "json"))
    if damage(source) or damage(record):
        return None
    with open(record) as f:
        result = json.load(f)["result"]
    os.makedirs(os.path.dirname(os.path.abspath(model_path)), exist_ok=True)
    _copy_atomically(source, model_path)
    return result


def store(cache_dir, key, settings, model_path, result):
    """Puts the teacher saved at `model_path` into the cache under `key` (no-op without a
    cache directory)."""
    if not cache_dir:
        return
    os.makedirs(cache_dir, exist_ok=True)
    _copy_atomically(model_path, os.path.join(cache_dir, f"{key}.keras"))
    record = os.path.join(cache_dir, f"{key}.json")
    with open(record + ".tmp", "w") as f:
        json.dump({"key": key, "settings": settings, "result": result}, f, indent=2)
    os.replace(record + ".tmp", record)


def _copy_atomically(source, target):
    # ".partial.keras", like `save_atomically`: a half-copied file never has the final name.
    tmp = target[: -len(".keras")] + ".partial.keras"
    shutil.copyfile(source, tmp)
    os.replace(tmp, target)

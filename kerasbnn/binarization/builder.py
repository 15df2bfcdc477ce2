"""A user's own float Keras model as a builder: `model.arch: path/to/model.keras`.

The pipeline builds every network of a run (the float teacher, the k-bit teachers, the binary
student) through a builder with the zoo's signature. For a `.keras` file, `builder(path)`
returns one: at 32 bits the file's model itself (its weights are the float teacher's start),
at k bits or 1 bit its `kerasbnn.binarize` twin with the run's quantizer or binary scheme, the
float weights as latent weights. Layers keep their names, so a student starts from its float
teacher's weights (`kerasbnn.transfer.from_float`), and MAD's feature terms distil at the
layers named `stage1_out`, `stage2_out`, ... if the model has them (`kerasbnn.models.taps`);
a model without them distils logits only (`distill.feature_weight: 0`).
"""

import functools
import hashlib
import os

from kerasbnn import models

#: What a model file's name ends with.
SUFFIX = ".keras"


def is_model_file(arch):
    """Whether `model.arch` names a `.keras` file rather than a zoo builder."""
    return isinstance(arch, str) and arch.endswith(SUFFIX)


def builder(arch):
    """The builder of `model.arch`: the zoo's (`kerasbnn.models.get`), or for a path ending
    in `.keras` the builder of that file's model (module docstring).

    Raises:
        ValueError: an unknown zoo name (listing them), or a model file that does not exist,
            is not a Keras model, or cannot be binarized (the message says what to do).
    """
    if not is_model_file(arch):
        return models.get(arch)
    _checked_model(os.path.abspath(arch), _stamp(arch))  # every fault before anything is built
    return functools.partial(_build_from_file, os.path.abspath(arch))


def file_digest(path):
    """The SHA-256 of the model file: part of a teacher's cache key, so that a changed file
    trains new teachers."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _stamp(path):
    if not os.path.isfile(path):
        raise ValueError(f"model.arch={path!r}: no such file; give the path of a model saved "
                         "with model.save('model.keras'), or a zoo name "
                         f"({', '.join(models.names())}).")
    return os.stat(path).st_mtime_ns


@functools.lru_cache(maxsize=4)
def _checked_model(path, stamp):
    """The file's model, loaded once per version of the file and checked: a built Sequential or
    functional model with one input, whose output is logits and which has a layer to binarize."""
    from kerasbnn.binarization import binarize, check_model

    model = check_model(path)
    if len(model.inputs) != 1 or len(model.outputs) != 1:
        raise ValueError(f"model.arch={path!r} has {len(model.inputs)} inputs and "
                         f"{len(model.outputs)} outputs; the pipeline trains classifiers with "
                         "one image input and one logits output.")
    last = model.layers[-1].get_config().get("activation")
    if last not in (None, "linear"):
        raise ValueError(f"model.arch={path!r} ends with a {last!r} activation; the pipeline "
                         f"trains on logits: rebuild its last layer with activation=None.")
    binarize(model, dry_run=True)  # raises if nothing would be binarized
    return model


def _build_from_file(path, input_shape=None, num_classes=None, *, bits=32, quantizer=None,
                     binary="bireal", bn_momentum=None, name=None):
    """The zoo signature over a model file: a fresh copy of the file's model at 32 bits, its
    `binarize` twin otherwise. `bn_momentum` is accepted and ignored: the file's BatchNorm
    layers keep theirs.

    Raises:
        ValueError: if the dataset's `input_shape` or `num_classes` differ from the model's.
    """
    import keras

    from kerasbnn.binarization import binarize

    model = keras.saving.load_model(path, safe_mode=True)  # fresh weights for every network
    _checked_model(path, _stamp(path))
    shape, classes = tuple(model.input_shape[1:]), model.output_shape[-1]
    if input_shape is not None and tuple(input_shape) != shape:
        raise ValueError(f"model.arch={path!r} takes inputs of shape {shape}, the dataset's "
                         f"images are {tuple(input_shape)}: rebuild the model with "
                         f"keras.Input({tuple(input_shape)}) or choose another data.name.")
    if num_classes is not None and num_classes != classes:
        raise ValueError(f"model.arch={path!r} has {classes} outputs, the dataset "
                         f"{num_classes} classes: rebuild its classifier with {num_classes}.")
    if bits == 32:
        return model
    return binarize(model, bits=bits, quantizer=quantizer, binary=binary)

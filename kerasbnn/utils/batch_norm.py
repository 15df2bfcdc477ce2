"""`recalibrate_batch_norm` and `precise_batch_norm`: precise BatchNormalization statistics
after training.

BatchNormalization's moving statistics are an exponential average of the last batches
(about 1 / (1 - momentum) of them), taken while the weights still move. Where a layer's output
has a large mean next to a small spread, as adder layers have (Y = -sum |X - F|, means of
thousands with standard deviations of a few units), the small lag of that average is several
standard deviations at inference and the test accuracy collapses although the training
accuracy is fine. Recomputing the statistics with the weights fixed ("precise BN", Wu &
Johnson, "Rethinking 'Batch' in BatchNorm", arXiv:2105.07576) removes the lag.

References:
    Ioffe & Szegedy, "Batch Normalization", ICML 2015 (population statistics at inference).
    Wu & Johnson, arXiv:2105.07576, section 3 (precise BN).
"""

import math

import keras
import numpy as np
import tensorflow as tf

__all__ = ["PRECISE_BN_BATCH", "batch_norm_layers", "precise_batch_norm",
           "recalibrate_batch_norm"]

PRECISE_BN_BATCH = 1000
"""Images per batch of `precise_batch_norm`: moments gathered in small batches carry the
upstream layers' batch noise into a binary student's statistics (a CMT-KD student scored
50.9% recomputed in batches of 128, 67.4% in batches of 1,000)."""


def batch_norm_layers(model):
    """The trainable `BatchNormalization` layers of `model` and of the models nested in it.

    Args:
        model: a `keras.Model` (functional, sequential or subclassed; nested models are
            searched through their `layers`).

    Returns:
        A list of layers, each once, in `model.layers` order. Frozen layers
        (`trainable=False`) are left out: Keras runs them in inference mode, so their statistics
        never change.
    """
    found, seen = [], set()

    def visit(layer):
        if id(layer) in seen:
            return
        seen.add(id(layer))
        if isinstance(layer, keras.layers.BatchNormalization):
            if layer.trainable:
                found.append(layer)
        elif isinstance(layer, keras.Model):
            for inner in layer.layers:
                visit(inner)

    visit(model)
    return found


def recalibrate_batch_norm(model, dataset, steps=None, jit_compile=True):
    r"""Sets every BatchNormalization's moving statistics to its input's statistics over `dataset`.

    With the weights fixed, the model runs in training mode (each BatchNormalization normalizes
    with its batch's moments, as during training) over `steps` batches b of sizes n_b, and each
    layer's moving statistics become the population moments of its input x over all N images
    (pixels included):

        moving_mean     = mu = sum_b n_b mu_b / N
        moving_variance = sum_b n_b (sigma_b^2 + (mu_b - mu)^2) / N

    (mu_b, sigma_b^2: the batch moments the layer normalizes with; accumulated in float64).
    Nothing but the moving statistics changes: no weight, no optimizer state, no momentum. If
    the dataset raises or gives no batch, the old statistics are put back.

    Args:
        model: the trained `keras.Model`.
        dataset: a `tf.data.Dataset` or any iterable of batches as `fit` takes them: `x`,
            `(x,)`, `(x, y)` or `(x, y, sample_weight)`. Use training data without augmentation
            noise you would not see at inference.
        steps: number of batches to use; None uses the whole dataset.
        jit_compile: compile the forward pass with XLA (several times faster for adder layers).

    Returns:
        The number of images used.

    Raises:
        ValueError: if the model has no trainable BatchNormalization layer, `steps` is not a
            positive integer or None, or the dataset gives no batch.
    """
    layers = _layers_to_recalibrate(model, steps)
    saved = [
        (layer.momentum, layer.moving_mean.numpy(), layer.moving_variance.numpy())
        for layer in layers
    ]
    # momentum 0 makes each training-mode call store exactly its batch's moments (Keras' own
    # update, moving = moving * momentum + batch * (1 - momentum)); they are read after the call.
    for layer in layers:
        layer.momentum = 0.0

    try:
        count, sums = _sum_batch_moments(model, layers, dataset, steps, jit_compile)
        if not count:
            raise ValueError("The dataset gave no batch: pass the training data to recalibrate on.")
    except BaseException:
        for layer, (_, mean, variance) in zip(layers, saved):
            layer.moving_mean.assign(mean)
            layer.moving_variance.assign(variance)
        raise
    finally:
        for layer, (momentum, _, _) in zip(layers, saved):
            layer.momentum = momentum
    _assign_population_moments(layers, sums, count)
    return count


def precise_batch_norm(model, batches, images):
    """Recomputes `model`'s BatchNormalization statistics over `images` training images, in
    batches of `PRECISE_BN_BATCH` (fewer images: one batch of them; the count is rounded up to
    whole batches), with `recalibrate_batch_norm` (Wu & Johnson, arXiv:2105.07576, section 3).

    Args:
        model: the trained `keras.Model`.
        batches: `batches(batch_size)` gives the training images, without augmentation, in
            batches of `batch_size` (e.g. `kerasbnn.data.load(..., augment=False)`).
        images: how many images; must be a positive integer.

    Returns:
        The number of images used.
    """
    if isinstance(images, bool) or int(images) != images or images < 1:
        raise ValueError(f"images must be a positive integer, received {images!r}.")
    batch = min(int(images), PRECISE_BN_BATCH)
    return recalibrate_batch_norm(model, batches(batch), steps=math.ceil(images / batch))


def _layers_to_recalibrate(model, steps):
    """`batch_norm_layers(model)`, after checking `steps` and that there is at least one.

    Raises:
        ValueError: if `steps` is not a positive integer or None, or the model has no
            trainable BatchNormalization layer.
    """
    if steps is not None and (isinstance(steps, bool) or int(steps) != steps or steps < 1):
        raise ValueError(f"steps must be a positive integer or None, received {steps!r}.")
    layers = batch_norm_layers(model)
    if not layers:
        raise ValueError(
            f"Model {model.name!r} has no trainable BatchNormalization layer: there are no "
            "statistics to recalibrate."
        )
    return layers


def _sum_batch_moments(model, layers, dataset, steps, jit_compile):
    """Runs `model` in training mode over `dataset` and sums each layer's batch moments.

    Every layer in `layers` must have momentum 0, so that after each call its moving statistics
    hold exactly the moments (mu_b, sigma_b^2) of the batch it just normalized.

    Returns:
        `(count, sums)`: the number N of images seen and, per layer, the float64 arrays
        `[sum_b n_b mu_b, sum_b n_b mu_b^2, sum_b n_b sigma_b^2]`.
    """

    def forward(x):
        return model(x, training=True)

    # XLA cannot compile a function that writes a variable mirrored on several devices
    # (`distribute: mirrored`); there the forward pass runs as a plain graph.
    jit_compile = jit_compile and tf.distribute.get_strategy().num_replicas_in_sync == 1
    forward = tf.function(forward, jit_compile=jit_compile, autograph=False)
    count = 0
    sums = [[np.zeros(layer.moving_mean.shape, np.float64) for _ in range(3)] for layer in layers]
    for step, batch in enumerate(dataset):
        if steps is not None and step >= steps:
            break
        x, _, _ = keras.utils.unpack_x_y_sample_weight(batch)
        forward(x)
        n = int(keras.ops.shape(keras.tree.flatten(x)[0])[0])
        count += n
        for (mean_sum, square_sum, var_sum), layer in zip(sums, layers):
            mean = layer.moving_mean.numpy().astype(np.float64)
            mean_sum += n * mean
            square_sum += n * mean**2
            var_sum += n * layer.moving_variance.numpy().astype(np.float64)
    return count, sums


def _assign_population_moments(layers, sums, count):
    """Sets each layer's moving statistics to the population moments of its `count` inputs.

    From the sums of `_sum_batch_moments`: mu = sum_b n_b mu_b / N and
    variance = sum_b n_b sigma_b^2 / N + sum_b n_b (mu_b - mu)^2 / N, computed in float64 and
    cast to the variables' dtype.
    """
    for layer, (mean_sum, square_sum, var_sum) in zip(layers, sums):
        mean = mean_sum / count
        # sum_b n_b (mu_b - mu)^2 = sum_b n_b mu_b^2 - N mu^2, taken in float64
        spread = np.maximum(square_sum / count - mean**2, 0.0)
        layer.moving_mean.assign(mean.astype(layer.moving_mean.dtype))
        layer.moving_variance.assign((var_sum / count + spread).astype(layer.moving_variance.dtype))

"""larq models for the importer tests, built, saved and run under larq 0.14.

Not a test module: tests/larq_import/import_test.py runs this file's text in one larq
subprocess (tests/larq_oracle.py), after a preamble that sets WORKDIR (where files go), CHILD
(kerasbnn/larq_import/_child.py), KERASBNN_ROOT (the checkout to import kerasbnn from) and
BATCH. It sees `inputs`, `outputs`, `np`, `tf` (the
legacy Keras 2) and `larq`, and stores in `outputs`:
- `<model>/x`, `<model>/inference`, `<model>/training`: a random batch and larq's outputs on
  it with training=False, then training=True (batch statistics); `<model>/<mode>_logits`: the
  same for the output of the layer before the last (the softmax's input);
- `<model>/weights/<layer>/<j>`: every layer's weights, read back from the model itself;
- `in_memory/larq`, `in_memory/kerasbnn`: the ReActNet model object's outputs, and those
  of `kerasbnn.from_larq(model)` run on it in this process;
- `reader/names`: the models whose files `_child.read_sources` (the function the importer's
  child process runs) described into `WORKDIR/reader/<i>/`, in that order.

The topologies are the Larq Zoo's, small: the zoo package itself pins protobuf<3.21, which
TensorFlow 2.21 cannot use, so it is not installed beside kerasbnn.
"""

import importlib.util
import os
import sys

import numpy as np
import tensorflow as tf

import larq as lq

layers = tf.keras.layers
BINARY = dict(
    input_quantizer="ste_sign", kernel_quantizer="ste_sign", kernel_constraint="weight_clip"
)


@lq.utils.register_keras_custom_object
def blurpool_initializer(shape, dtype=None):
    """Larq Zoo QuickNet's anti-aliasing kernel (binomial blur), written here anew."""
    row = np.array([1.0, 2.0, 1.0])
    kernel = np.outer(row, row) / 16.0
    return np.reshape(np.repeat(kernel[:, :, None], shape[2], axis=-1), shape).astype("float32")


class LearnableBias(tf.keras.layers.Layer):
    """ReActNet's learnable bias as larq users write it: x + b, b of shape (C,)."""

    def build(self, input_shape):
        self.bias = self.add_weight("bias", shape=(input_shape[-1],), initializer="zeros")

    def call(self, x):
        return x + self.bias


class LearnableScale(tf.keras.layers.Layer):
    """A user layer named like nothing kerasbnn knows: x * s."""

    def build(self, input_shape):
        self.scale = self.add_weight("scale", shape=(input_shape[-1],), initializer="ones")

    def call(self, x):
        return x * self.scale


def binary_cnn():
    """A Sequential binary CNN: float first layer, binary middle, BN, pooling, dense head."""
    return tf.keras.Sequential(
        [
            tf.keras.Input((12, 12, 3)),
            lq.layers.QuantConv2D(
                8, 3, kernel_quantizer="ste_sign", kernel_constraint="weight_clip", use_bias=False
            ),
            layers.BatchNormalization(scale=False, momentum=0.9),
            lq.layers.QuantConv2D(8, 3, padding="same", pad_values=1.0, use_bias=False, **BINARY),
            layers.BatchNormalization(),
            layers.MaxPool2D(2),
            lq.layers.QuantDepthwiseConv2D(
                3, padding="same", pad_values=1.0, depth_multiplier=2,
                input_quantizer="ste_sign", depthwise_quantizer="ste_sign",
                depthwise_constraint=lq.constraints.WeightClip(1.3),
            ),
            layers.BatchNormalization(),
            layers.Flatten(),
            lq.layers.QuantDense(10, use_bias=False, **BINARY),
            layers.BatchNormalization(),
            layers.Activation("softmax"),
        ],
        name="binary_cnn",
    )


def _bireal_block(x, filters, strides):
    shortcut = x
    if strides > 1 or x.shape[-1] != filters:
        shortcut = layers.AvgPool2D(2, strides=2, padding="same")(shortcut)
        shortcut = layers.Conv2D(filters, 1, use_bias=False)(shortcut)
        shortcut = layers.BatchNormalization(momentum=0.8)(shortcut)
    x = lq.layers.QuantConv2D(
        filters, 3, strides=strides, padding="same", use_bias=False,
        input_quantizer="approx_sign", kernel_quantizer="magnitude_aware_sign",
        kernel_constraint="weight_clip",
    )(x)
    x = layers.BatchNormalization(momentum=0.8)(x)
    return layers.add([x, shortcut])


def bireal():
    """Bi-Real Net (Larq Zoo's `BiRealNet` topology) at 16x16 input and 8-16 filters."""
    inputs = tf.keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 7, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization(momentum=0.8)(x)
    x = layers.MaxPool2D(3, strides=2, padding="same")(x)
    x = _bireal_block(x, 8, 1)
    x = _bireal_block(x, 8, 1)
    x = _bireal_block(x, 16, 2)
    x = _bireal_block(x, 16, 1)
    x = layers.AveragePooling2D(pool_size=x.shape[1:3])(x)
    x = layers.Flatten()(x)
    x = layers.Dense(10)(x)
    return tf.keras.Model(inputs, layers.Activation("softmax", dtype="float32")(x), name="bireal")


def quicknet():
    """QuickNet (Larq Zoo's `QuickNet`) with (1, 1) blocks of (16, 32) filters at 32x32."""
    inputs = tf.keras.Input((32, 32, 3))
    x = lq.layers.QuantConv2D(4, 3, strides=2, padding="same", use_bias=False,
                              kernel_initializer="he_normal")(inputs)
    x = layers.BatchNormalization()(x)
    x = layers.Activation("relu")(x)
    x = lq.layers.QuantDepthwiseConv2D(3, strides=2, padding="same", use_bias=False)(x)
    x = layers.BatchNormalization(scale=False, center=False)(x)
    x = lq.layers.QuantConv2D(16, 1, use_bias=False)(x)
    x = layers.BatchNormalization()(x)
    for filters in (16, 32):
        if x.shape[-1] != filters:
            x = layers.Activation("relu")(x)
            x = layers.MaxPool2D(pool_size=2, strides=1)(x)
            x = layers.DepthwiseConv2D(
                3, depthwise_initializer=blurpool_initializer, padding="same", strides=2,
                trainable=False, use_bias=False,
            )(x)
            x = lq.layers.QuantConv2D(filters, 1, use_bias=False)(x)
            x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        residual = x
        x = lq.layers.QuantConv2D(filters, 3, activation="relu",
                                  input_quantizer=lq.quantizers.SteSign(clip_value=1.25),
                                  kernel_quantizer=lq.quantizers.SteSign(clip_value=1.25),
                                  kernel_constraint=lq.constraints.WeightClip(1.25),
                                  padding="same", pad_values=1.0, use_bias=False)(x)
        x = layers.BatchNormalization(momentum=0.9, epsilon=1e-5)(x)
        x = x + residual
    x = layers.Activation("relu")(x)
    x = layers.AveragePooling2D(pool_size=x.shape[1:3])(x)
    x = layers.Flatten()(x)
    x = lq.layers.QuantDense(10)(x)
    return tf.keras.Model(inputs, layers.Activation("softmax", dtype="float32")(x), name="quicknet")


def _reactnet_block(x, filters):
    shortcut = x
    strides = 2 if filters != x.shape[-1] else 1
    y = LearnableBias()(x)
    y = lq.layers.QuantConv2D(x.shape[-1], 3, strides=strides, padding="same", use_bias=False,
                              input_quantizer="ste_sign", kernel_quantizer="magnitude_aware_sign",
                              kernel_constraint="weight_clip")(y)
    y = layers.BatchNormalization()(y)
    if strides > 1:
        shortcut = layers.AvgPool2D(2)(shortcut)
    y = layers.Add()([y, shortcut])
    y = LearnableBias()(y)
    y = layers.PReLU(shared_axes=[1, 2])(y)
    y = LearnableBias()(y)
    if filters != x.shape[-1]:
        y = layers.Concatenate()([y, y])  # ReActNet's channel doubling
    return y


def reactnet():
    """ReActNet-A blocks (RSign = LearnableBias + sign, RPReLU = bias, PReLU, bias)."""
    inputs = tf.keras.Input((16, 16, 3))
    x = layers.Conv2D(8, 3, strides=2, padding="same", use_bias=False)(inputs)
    x = layers.BatchNormalization()(x)
    x = _reactnet_block(x, 8)
    x = _reactnet_block(x, 16)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, layers.Dense(10)(x), name="reactnet")


def coverage():
    """Every quantizer and constraint larq has, and every ordinary layer the importer reads."""
    q = lq.quantizers
    inputs = tf.keras.Input((8, 8, 4))
    a = lq.layers.QuantConv2D(6, 3, padding="same", input_quantizer=q.SteSign(clip_value=None),
                              kernel_quantizer=q.SwishSign(beta=3.0),
                              kernel_constraint=lq.constraints.WeightClip(0.7))(inputs)
    b = lq.layers.QuantConv2D(6, 3, padding="same", input_quantizer=q.SteHeaviside(),
                              kernel_quantizer=q.SteTern(threshold_value=0.1),
                              kernel_regularizer=tf.keras.regularizers.L2(1e-4),
                              activation="hard_tanh")(inputs)
    c = lq.layers.QuantConv2D(6, 1, input_quantizer=q.DoReFa(k_bit=3, mode="activations"),
                              kernel_quantizer=q.DoReFa(k_bit=2, mode="weights"),
                              kernel_constraint=tf.keras.constraints.MaxNorm(2.0))(inputs)
    d = lq.layers.QuantDepthwiseConv2D(3, padding="same", input_quantizer="approx_sign",
                                       depthwise_quantizer=q.SteTern(ternary_weight_networks=True),
                                       activation="relu")(inputs)
    d = layers.Conv2D(6, 1)(d)
    x = layers.Subtract()([layers.Add()([a, b]), c])
    x = layers.Multiply()([x, layers.ReLU(max_value=2.0)(d)])
    x = layers.Average()([x, layers.Maximum()([a, d]), layers.Minimum()([b, c])])
    x = layers.LeakyReLU(alpha=0.2)(x)
    x = x - 0.25
    x = 1.5 * x + a
    x = tf.math.multiply(x, d)
    x = layers.ZeroPadding2D(1)(x)
    x = layers.Dropout(0.3)(x)
    x = layers.Rescaling(0.5, offset=0.1)(x)
    pooled = layers.GlobalMaxPooling2D()(x)
    flat = layers.Reshape((10 * 10 * 6,))(x)
    x = layers.Concatenate()([pooled, layers.Dense(6)(flat)])
    x = lq.layers.QuantDense(5, input_quantizer=q.NoOp(precision=8),
                             kernel_quantizer=q.MagnitudeAwareSign(clip_value=1.5))(x)
    return tf.keras.Model(inputs, layers.Softmax()(x), name="coverage")


def float_model():
    inputs = tf.keras.Input((6, 6, 2))
    x = layers.Conv2D(3, 3, activation="relu")(inputs)
    x = layers.GlobalAveragePooling2D()(x)
    return tf.keras.Model(inputs, layers.Dense(2)(x), name="float_model")


def unsupported():
    """Three things kerasbnn cannot rebuild: a larq layer, an activation, a quantizer."""
    inputs = tf.keras.Input((8, 8, 3))
    x = lq.layers.QuantSeparableConv2D(4, 3, input_quantizer="ste_sign",
                                       depthwise_quantizer="ste_sign",
                                       pointwise_quantizer="ste_sign")(inputs)
    x = lq.layers.QuantConv2D(4, 3, activation="leaky_tanh")(x)
    x = lq.layers.QuantConv2D(4, 1, kernel_quantizer=lq.quantizers.DoReFa(1, mode="weights"))(x)
    x = LearnableScale()(x)
    return tf.keras.Model(inputs, x, name="unsupported")


def _randomize(model, rng):
    for variable in model.weights:
        name = variable.name
        if "moving_variance" in name or "gamma" in name:
            value = rng.uniform(0.5, 1.5, size=variable.shape)
        elif "alpha" in name:  # PReLU slopes
            value = rng.uniform(0.0, 0.5, size=variable.shape)
        else:
            value = rng.normal(scale=0.5, size=variable.shape)
        variable.assign(value.astype("float32"))


def _record(name, model, path, rng):
    _randomize(model, rng)
    model.save(path, **({"save_format": "tf"} if not os.path.splitext(path)[1] else {}))
    for i, layer in enumerate(model.layers):
        for j, value in enumerate(layer.get_weights()):
            outputs[f"{name}/weights/{layer.name}/{j}"] = value
    x = rng.normal(size=(BATCH, *model.input_shape[1:])).astype("float32")
    outputs[f"{name}/x"] = x
    # Softmax hides differences once it saturates: the logits are compared as well.
    logits = tf.keras.Model(model.inputs, model.layers[-2].output)
    for mode in ("inference", "training"):
        outputs[f"{name}/{mode}_logits"] = logits(x, training=mode == "training").numpy()
        outputs[f"{name}/{mode}"] = model(x, training=mode == "training").numpy()


rng = np.random.default_rng(2024)
FILES = {
    "binary_cnn": "binary_cnn.h5",
    "bireal": "bireal_savedmodel",
    "quicknet": "quicknet.h5",
    "reactnet": "reactnet_savedmodel",
    "coverage": "coverage.keras",
    "float_model": "float_model.h5",
    "unsupported": "unsupported_savedmodel",
}
BUILDERS = {
    "binary_cnn": binary_cnn,
    "bireal": bireal,
    "quicknet": quicknet,
    "reactnet": reactnet,
    "coverage": coverage,
    "float_model": float_model,
    "unsupported": unsupported,
}
models = {}
with lq.context.metrics_scope(["flip_ratio"]):  # larq's training metrics, to be ignored
    for name, builder in BUILDERS.items():
        models[name] = builder()
        _record(name, models[name], os.path.join(WORKDIR, FILES[name]), rng)
reactnet_h5 = reactnet()
reactnet_h5.save(os.path.join(WORKDIR, "reactnet.h5"))  # a user class in HDF5: not loadable
binary_cnn().save_weights(os.path.join(WORKDIR, "weights_only.h5"))

_spec = importlib.util.spec_from_file_location("kerasbnn_larq_child", CHILD)
child = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(child)
names = [*FILES, "reactnet_h5"]
paths = [os.path.join(WORKDIR, FILES.get(n, "reactnet.h5")) for n in names]
child.read_sources(paths, os.path.join(WORKDIR, "reader"), tf.keras)
outputs["reader/names"] = np.array(names)

# from_larq(model) where larq runs: kerasbnn (Keras 3) imported beside the legacy Keras 2.
sys.path.insert(0, KERASBNN_ROOT)
import kerasbnn  # noqa: E402

x = outputs["reactnet/x"]
outputs["in_memory/larq"] = models["reactnet"](x, training=False).numpy()
outputs["in_memory/kerasbnn"] = np.asarray(kerasbnn.from_larq(models["reactnet"])(x))

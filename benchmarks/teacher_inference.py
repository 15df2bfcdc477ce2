"""Frozen teachers as inference functions: each kernel quantized once, batch norm folded or
reduced to precomputed constants, the whole forward pass traced once.

A helper of benchmarks/train_speed.py, which times it against the distiller's own teacher
pass; no distiller uses it (it was `kerasbnn.teachers` before issue 32).

A distiller runs its frozen teachers on every batch, but a teacher's weights never change:
re-quantizing its kernels, recomputing `gamma / sqrt(var + eps)` and re-reading its variables
every step is work that a forward pass does not need. `inference_function(teacher, taps)`
does that work once:

- **Kernels.** Every weight quantizer (`kernel`, `depthwise`) of every `QuantizerMixin` layer
  is applied once, eagerly; the traced graph holds the quantized kernel as a constant, as
  `kerasbnn.layers.base.constant_quantized_weights` does for the export.
- **Batch norm.** In inference mode `BN(y) = y * a + c` with `a = gamma rsqrt(var + eps)` and
  `c = beta - mean a`: `a` and `c` become constants computed with the same float32 ops as
  `tf.nn.batch_normalization`, so the result is bitwise the teacher's. When `fold_batch_norm`
  allows it, `a` and `c` are folded into the preceding convolution (`W' = W a`,
  `b' = b a + c`), which TensorFlow then runs as one fused conv + bias: one pass over the
  activations fewer, two in a float teacher (no multiply and add after the conv).
- **One trace.** The forward pass is one `tf.function` (optionally XLA, `jit_compile=True`),
  traced on its first call and reused.

Folding changes the rounding of the conv output (`conv(x, W a)` is not bitwise
`conv(x, W) a`). In a float teacher that is a relative difference of about 1e-7; in a
quantized teacher it can move a value across a rounding threshold of the next activation
quantizer and change one level, far more than 1e-5. `fold_batch_norm="auto"` (the default)
therefore folds only in models without activation quantizers (the 32-bit teacher) and uses
the exact constants elsewhere.

Example:
```python
from kerasbnn import models
from teacher_inference import inference_function  # run from benchmarks/

teacher = models.resnet20((32, 32, 3), 10, bits=4)
run = inference_function(teacher, feature_taps=models.taps(teacher))
outputs = run(x)          # {"logits": ..., "stage1_out": ..., "stage2_out": ..., ...}
```

The function reads the teacher's weights when it is made: after loading or changing them,
call `run.refresh()` (or make a new one). Its outputs carry no gradient (a teacher is
frozen); they equal `teacher(x, training=False)` and the tapped layer outputs to 1e-5
(tests/teacher_inference_test.py, zoo teachers at 32/8/4/2 bits).

The graph walk uses the functional model's own executor, `Functional._run_through_graph`
(the method `Model.call` runs), with a per-layer replacement; a model that is not
functional (subclassed) runs its `call(x, training=False)` with the constant kernels only.
"""

import keras
import tensorflow as tf
from keras import ops

from kerasbnn.layers.base import QuantizerMixin, iter_layers

LOGITS = "logits"
FOLD_CHOICES = ("auto", True, False)


def _is_functional(model):
    return hasattr(model, "_run_through_graph") and hasattr(model, "_nodes_by_depth")


def _has_activation_quantizers(model):
    return any(
        isinstance(layer, QuantizerMixin) and getattr(layer, "input_quantizer", None) is not None
        for layer in iter_layers(model)
    )


def _batch_norm_constants(bn):
    """`(a, c)` with `BN(y) = y * a + c` in inference, as `tf.nn.batch_normalization` computes
    them (rsqrt, times gamma; offset - mean * inv), so that `y * a + c` is bitwise BN's."""
    mean = tf.convert_to_tensor(bn.moving_mean)
    variance = tf.convert_to_tensor(bn.moving_variance)
    inv = tf.math.rsqrt(variance + bn.epsilon)
    if bn.scale:
        inv = inv * tf.convert_to_tensor(bn.gamma)
    offset = -mean * inv
    if bn.center:
        offset = tf.convert_to_tensor(bn.beta) - mean * inv
    return inv, offset


def _last_axis_bn(bn, rank):
    axis = bn.axis if isinstance(bn.axis, int) else (bn.axis[0] if len(bn.axis) == 1 else None)
    return axis is not None and axis in (-1, rank - 1)


def _foldable_conv(layer):
    """A plain 2-D convolution whose output may absorb a per-channel affine map."""
    if type(layer) is keras.layers.Conv2D:
        pass
    elif isinstance(layer, QuantizerMixin) and isinstance(layer, keras.layers.Conv2D):
        if getattr(layer, "scaling", None) is not None:
            return False
    else:
        return False
    linear = layer.activation in (None, keras.activations.linear)
    return linear and layer.groups == 1 and layer.data_format == "channels_last"


def _graph_nodes(model):
    nodes = []
    for depth in sorted(model._nodes_by_depth, reverse=True):
        nodes.extend(n for n in model._nodes_by_depth[depth] if n.operation and not n.is_input)
    return nodes


def _fold_pairs(model):
    """`{conv_layer: bn_layer}` for every conv whose only consumer is a batch norm, both
    used once in the graph, the conv's output not an output of the model (a tap)."""
    nodes = _graph_nodes(model)
    uses = {}
    consumers = {}
    for node in nodes:
        uses[id(node.operation)] = uses.get(id(node.operation), 0) + 1
        for tensor in node.input_tensors:
            consumers.setdefault(id(tensor), []).append(node)
    outputs = {id(t) for t in model.outputs}
    pairs = {}
    for node in nodes:
        conv = node.operation
        if not _foldable_conv(conv) or uses[id(conv)] != 1 or len(node.outputs) != 1:
            continue
        out = node.outputs[0]
        readers = consumers.get(id(out), [])
        if id(out) in outputs or len(readers) != 1:
            continue
        bn = readers[0].operation
        if (
            isinstance(bn, keras.layers.BatchNormalization)
            and uses[id(bn)] == 1
            and len(readers[0].input_tensors) == 1
            and _last_axis_bn(bn, len(out.shape))
        ):
            pairs[conv] = bn
    return pairs


class TeacherInference:
    """A frozen model's forward pass with constant weights, traced once.

    Build it with `inference_function`; calling it returns
    `{"logits": teacher(x, training=False), <tap>: output of layer <tap>, ...}`.

    Attributes:
        model: the teacher.
        feature_taps: names of the tapped layers.
        folded: names of the convolutions that absorbed the batch norm after them.
        jit_compile: whether the function is XLA-compiled.
    """

    def __init__(self, model, feature_taps=(), *, fold_batch_norm=False, jit_compile=False):
        if fold_batch_norm not in FOLD_CHOICES:
            raise ValueError(
                f"fold_batch_norm must be 'auto', True or False, received {fold_batch_norm!r}."
            )
        if isinstance(feature_taps, str):
            feature_taps = (feature_taps,)
        self.model = model
        self.feature_taps = tuple(feature_taps)
        self.jit_compile = bool(jit_compile)
        names = {layer.name for layer in model.layers}
        missing = [name for name in self.feature_taps if name not in names]
        if missing:
            raise ValueError(
                f"Model {model.name!r} has no layer(s) {missing}; feature_taps must name its "
                "layers, e.g. those of kerasbnn.models.taps(model)."
            )
        if LOGITS in self.feature_taps:
            raise ValueError(f"A tap may not be named {LOGITS!r}: that key holds the logits.")
        self._graph = None
        if _is_functional(model) and len(model.inputs) == 1 and len(model.outputs) == 1:
            outputs = {LOGITS: model.outputs[0]}
            outputs.update({name: model.get_layer(name).output for name in self.feature_taps})
            self._graph = keras.Model(model.inputs[0], outputs, name=f"{model.name}_inference")
        elif self.feature_taps:
            raise ValueError(
                f"feature_taps need a functional model with one input and one output; "
                f"{model.name!r} is not one."
            )
        if fold_batch_norm == "auto":
            fold_batch_norm = not _has_activation_quantizers(model)
        self.fold_batch_norm = bool(fold_batch_norm) and self._graph is not None
        self.refresh()

    def refresh(self):
        """Reads the teacher's weights again (after loading or changing them) and retraces."""
        self._kernels = {}  # layer -> {role: constant}
        self._affine = {}  # bn layer -> (a, c)
        self._folded = {}  # conv layer -> (kernel, bias)
        quantized = [
            layer for layer in iter_layers(self.model)
            if isinstance(layer, QuantizerMixin) and layer.built
        ]
        norms = []
        if self._graph is not None:
            norms = [
                layer for layer in iter_layers(self._graph)
                if isinstance(layer, keras.layers.BatchNormalization) and layer.built
            ]

        def constants():
            kernels = [
                {
                    role: layer.apply_quantizer(role, layer.kernel)
                    for role in layer.weight_roles
                    if getattr(layer, f"{role}_quantizer") is not None
                }
                for layer in quantized
            ]
            return kernels, [_batch_norm_constants(bn) for bn in norms]

        # Computed in a graph, as the teacher's own call computes them inside a train step:
        # TensorFlow's graph and eager kernels differ in the last bit for some quantizers
        # (`round(x n) / n`), and one ulp on a kernel is enough to flip an 8-bit activation.
        kernels, affine = tf.function(constants)()
        for layer, values in zip(quantized, kernels):
            if values:
                self._kernels[layer] = {role: tf.constant(v.numpy()) for role, v in values.items()}
        for bn, (a, c) in zip(norms, affine):
            self._affine[bn] = (tf.constant(a.numpy()), tf.constant(c.numpy()))
        if self.fold_batch_norm:
            for conv, bn in _fold_pairs(self._graph).items():
                self._folded[conv] = self._fold(conv, bn)
        self.folded = tuple(conv.name for conv in self._folded)
        self._function = tf.function(
            self._forward, jit_compile=self.jit_compile, reduce_retracing=True
        )
        return self

    def _fold(self, conv, bn):
        a, c = self._affine.pop(bn)
        self._affine[bn] = None  # the BN is the identity after its folded conv
        kernel = self._kernels.get(conv, {}).get("kernel")
        if kernel is None:
            kernel = tf.convert_to_tensor(conv.kernel)
        folded_kernel = kernel * a
        bias = c
        if conv.use_bias:
            bias = tf.convert_to_tensor(conv.bias) * a + c
        return tf.constant(folded_kernel.numpy()), tf.constant(bias.numpy())

    # ------------------------------------------------------------------ the traced function

    def _operation(self, op):
        if op in self._folded:
            return lambda x, **kwargs: self._folded_conv(op, x)
        if isinstance(op, keras.layers.BatchNormalization) and op in self._affine:
            constants = self._affine[op]
            if constants is None:
                return lambda x, **kwargs: x
            a, c = constants
            return lambda x, **kwargs: x * ops.cast(a, x.dtype) + ops.cast(c, x.dtype)

        def call(*args, **kwargs):
            if "training" in getattr(op, "_call_context_args", ()):
                kwargs["training"] = False
            return op(*args, **kwargs)

        return call

    def _folded_conv(self, conv, x):
        kernel, bias = self._folded[conv]
        padding = conv.padding
        if isinstance(conv, QuantizerMixin):
            x = conv.apply_quantizer("input", x)
            x, padding = conv._pad_same(x)
        y = ops.conv(
            x,
            ops.cast(kernel, x.dtype),
            strides=list(conv.strides),
            padding=padding,
            dilation_rate=conv.dilation_rate,
            data_format=conv.data_format,
        )
        return ops.add(y, ops.cast(bias, y.dtype))

    def _forward(self, x):
        # Runs at trace time only: the constants are captured by the traced graph.
        for layer, constants in self._kernels.items():
            layer._constant_weights.update(constants)
        try:
            if self._graph is None:
                return {LOGITS: self.model(x, training=False)}
            outputs = self._graph._run_through_graph([x], operation_fn=self._operation)
            return dict(outputs) if isinstance(outputs, dict) else dict(
                zip([LOGITS, *self.feature_taps], outputs)
            )
        finally:
            for layer in self._kernels:
                layer._constant_weights.clear()

    def __call__(self, x):
        """`{"logits": ..., <tap>: ...}` for the batch `x`, without gradient."""
        outputs = self._function(x)
        return {key: tf.stop_gradient(value) for key, value in outputs.items()}


def inference_function(model, feature_taps=(), *, fold_batch_norm=False, jit_compile=False):
    """The frozen `model`'s forward pass as one function with constant weights.

    Args:
        model: a built Keras model (a teacher); a functional one for taps and folding.
        feature_taps: names of the layers whose outputs are returned besides the logits
            (e.g. `kerasbnn.models.taps(model)`).
        fold_batch_norm: `"auto"` (fold each batch norm into the convolution before it only
            when the model has no activation quantizers, where folding cannot change a
            rounding decision), True (fold wherever a conv feeds only a batch norm) or False
            (never; batch norm runs with precomputed constants, bitwise equal to the layer).
        jit_compile: XLA-compile the function. On CPU (TF 2.21, 2 cores) it was slower than
            the plain graph for the zoo's ResNet-20 (benchmarks/train_speed.py measures both),
            hence the default False.

    Returns:
        A `TeacherInference`: `f(x)` returns `{"logits": logits, <tap>: feature, ...}`, equal
        to `model(x, training=False)` and the taps' outputs (to 1e-5 where folded, bitwise
        otherwise up to the order of float operations), with gradients stopped. `f.refresh()`
        re-reads the weights; `f.folded` lists the folded convolutions.

    Raises:
        ValueError: for a tap the model does not have, taps on a non-functional model, or an
            invalid `fold_batch_norm`.
    """
    return TeacherInference(
        model, feature_taps, fold_batch_norm=fold_batch_norm, jit_compile=jit_compile
    )

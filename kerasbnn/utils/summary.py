"""`summary(model)`: bit widths, memory and operation counts of a (quantized) Keras model.

The counting rules follow the MAD paper's Table 4 (Memory and computational cost), which in
turn follows Bi-Real Net [Liu et al. 2018, arXiv:1808.00278] and ReActNet [Liu et al. 2020,
arXiv:2003.03488]:

* Memory (MAD §5): ``memory = 32 * #float params + k * #k-bit params + 1 * #binary params``
  bits, reported in Mbit (1 Mbit = 10^6 bits, the unit that gives ResNet-18's 374.1 Mbit).
  A weight is k-bit when the layer's weight quantizer (`kernel_quantizer`,
  `depthwise_quantizer`, `pointwise_quantizer`) has precision k < 32; biases, BatchNorm
  parameters and learnable quantizer parameters (the LSQ step) are always float.
  BatchNormalization counts 2 parameters per channel, the scale and offset it folds into at
  inference (y = a * x + b); its moving statistics are not extra parameters. With this rule
  a float ResNet-18 holds 11,689,512 parameters, 374.1 Mbit, as in the table.
* Operations: a convolution or dense layer performs MACs = (number of outputs) x (kernel
  elements per output) multiply-accumulates; Conv/Dense MACs are the only operations counted
  (BatchNorm, activations, pooling and additions are not), which gives ResNet-18's 18.1e8 FLOPs.
  - If both the weights and the input are quantized with at most 8 bits, the MACs are bit
    operations: ``BOPs = MACs * w_bits * a_bits``. For 1/1 layers this is MAD's BOPs (one
    XNOR-popcount per MAC). For k-bit layers it is the bit-serial cost of DoReFa-Net's eq. 3
    [Zhou et al. 2016, arXiv:1606.06160]: a w-bit x a-bit dot product is w * a AND-popcount
    dot products of bit planes, so a 2/2 layer costs 4 BOPs per MAC and an 8/8 layer
    64 BOPs = one FLOP per MAC, the cost of the float layer.
  - Otherwise (either side float, or above 8 bits), the MACs are FLOPs, as MAD counts the
    float first layer, the float 1x1 downsampling shortcuts and the float FC layer.
  - ``OPs = BOPs / 64 + FLOPs`` (MAD §5, ReActNet).
  - Duck-typed convolutions (a `kernel_size` and a `kernel`, e.g. `AdderConv2D`) count the
    same way; an adder layer's |x - w| accumulations are counted as FLOPs.
* The float reference is the same model with every quantizer removed: the same parameters at
  32 bits and every MAC a FLOP; ``memory_ratio`` and ``ops_ratio`` are float / this model
  (how many times smaller and cheaper it is).

A layer whose quantizer declares no integer `precision` between 1 and 32 is counted as float
(the safe upper bound), shown with a "?" in the table and listed under `unknown_precision`.
Output sizes come from the functional graph (`layer.output`); a layer called several times
(a shared layer) is counted once, at its first call.
"""

import dataclasses
import math
import numbers

import keras

from kerasbnn import quantizers

__all__ = ["summary", "FLOAT_BITS", "MAX_BOP_BITS"]

FLOAT_BITS = 32
# Up to this width (both operands) a MAC runs as bit-serial AND-popcounts: BOPs, not FLOPs.
MAX_BOP_BITS = 8
# ReActNet / MAD: a 64-bit popcount does 64 binary operations in one instruction.
BOPS_PER_OP = 64
_WEIGHT_ROLES = {
    "kernel": ("kernel",),
    "depthwise": ("depthwise_kernel", "kernel"),
    "pointwise": ("pointwise_kernel",),
}


@dataclasses.dataclass
class _Part:
    """One linear operation of a layer: its MACs and the bits of its two operands."""

    macs: int
    w_bits: int
    a_bits: int


@dataclasses.dataclass
class _LayerStats:
    name: str
    class_name: str
    output_shape: tuple
    w_bits: object  # int, "?" or None (no weights)
    a_bits: object
    params_by_bits: dict
    parts: list
    unknown: bool

    @property
    def params(self):
        return sum(self.params_by_bits.values())

    @property
    def memory_bits(self):
        return sum(bits * count for bits, count in self.params_by_bits.items())

    @property
    def macs(self):
        return sum(p.macs for p in self.parts)

    @property
    def bops(self):
        return sum(_bops(p) for p in self.parts)

    @property
    def flops(self):
        return sum(p.macs for p in self.parts if _bops(p) == 0)


def _bops(part):
    if part.w_bits <= MAX_BOP_BITS and part.a_bits <= MAX_BOP_BITS:
        return part.macs * part.w_bits * part.a_bits
    return 0


def _quantizer_bits(quantizer):
    """Bits of a quantizer's output, or None when it does not declare a usable precision."""
    if quantizer is None:
        return FLOAT_BITS
    precision = getattr(quantizer, "precision", None)
    if isinstance(precision, bool) or not isinstance(precision, numbers.Integral):
        return None
    if not 1 <= precision <= FLOAT_BITS:
        return None
    return quantizers.precision_of(quantizer)


def _roles(layer):
    roles = getattr(layer, "_quantizer_roles", None)
    if roles is None:
        roles = [r for r in ("input", *_WEIGHT_ROLES) if hasattr(layer, f"{r}_quantizer")]
    return tuple(roles)


def _output_shape(layer):
    try:
        output = layer.output
    except (AttributeError, ValueError):
        return None
    shapes = [t.shape for t in keras.tree.flatten(output)]
    return tuple(shapes[0]) if len(shapes) == 1 else tuple(tuple(s) for s in shapes)


def _spatial_size(layer, shape):
    """Product of the spatial output dimensions of a conv-like layer."""
    if shape is None or not shape or isinstance(shape[0], tuple):
        raise ValueError(
            f"summary() needs the output shape of layer {layer.name!r} "
            f"({type(layer).__name__}) to count its operations, but the layer was never called "
            "on a symbolic input. Build the model with the functional API or Sequential with "
            "an Input (keras.Model(inputs, outputs)) so every layer has a defined output."
        )
    channels_first = getattr(layer, "data_format", "channels_last") == "channels_first"
    spatial = shape[2:] if channels_first else shape[1:-1]
    if any(d is None for d in spatial):
        raise ValueError(
            f"Layer {layer.name!r} has an unknown spatial output size {tuple(shape)}: give "
            "keras.Input a full shape (e.g. (224, 224, 3)) so operations can be counted."
        )
    return math.prod(int(d) for d in spatial)


def _weight_variables(layer, role):
    for attr in _WEIGHT_ROLES[role]:
        variable = getattr(layer, attr, None)
        if variable is not None and hasattr(variable, "shape"):
            return variable
    return None


def _size(variable):
    return math.prod(int(d) for d in variable.shape)


def _input_shape(layer):
    try:
        return tuple(layer.input.shape)
    except (AttributeError, ValueError):
        return None


def _is_conv_like(layer):
    """Keras convolutions and duck-typed ones (a `kernel_size` and a kernel), e.g. AdderConv2D."""
    return hasattr(layer, "kernel_size") and not isinstance(layer, keras.layers.Dense)


def _is_dense_like(layer):
    if isinstance(layer, keras.layers.Dense):
        return True
    kernel = getattr(layer, "kernel", None)
    return (
        not _is_conv_like(layer)
        and not isinstance(layer, keras.layers.EinsumDense)
        and kernel is not None
        and len(kernel.shape) == 2
    )


def _role_bits(layer, roles):
    """`({role: bits or None}, unknown)`: each quantizer's output bits (None when it declares
    no usable precision) and whether any of them is unknown."""
    unknown = False
    bits = {}
    for role in roles:
        b = _quantizer_bits(getattr(layer, f"{role}_quantizer"))
        if b is None:
            unknown = True
        bits[role] = b
    return bits, unknown


def _weight_bits(layer, bits):
    """Precision of each weight variable: quantized kernels at their bits, the rest float.

    Returns `{id(variable): (role, variable, bits)}`, an unknown precision counted as float.
    """
    weight_bits = {}
    for role in _WEIGHT_ROLES:
        variable = _weight_variables(layer, role)
        if variable is None or (id(variable) in weight_bits and role not in bits):
            continue
        b = bits.get(role, FLOAT_BITS)
        weight_bits[id(variable)] = (role, variable, FLOAT_BITS if b is None else b)
    return weight_bits


def _params_by_bits(layer, weight_bits):
    """`{bits: parameter count}` of `layer`, empty counts left out."""
    params_by_bits = {}
    if isinstance(layer, keras.layers.BatchNormalization):
        # Folded at inference into y = a * x + b: 2 float parameters per channel.
        channels = int(layer.moving_mean.shape[0]) if layer.weights else 0
        params_by_bits[FLOAT_BITS] = 2 * channels
    else:
        for variable in layer.weights:
            count = _size(variable)
            b = weight_bits.get(id(variable), (None, None, FLOAT_BITS))[2]
            params_by_bits[b] = params_by_bits.get(b, 0) + count
    return {b: c for b, c in params_by_bits.items() if c}


def _linear_parts(layer, shape, weight_bits, a_count):
    """The `_Part`s (MACs and operand bits) of a dense-like or conv-like layer, else none."""
    parts = []
    if _is_dense_like(layer):
        # A Dense layer on a (batch, ..., features) input applies its kernel at every
        # position of the middle axes.
        positions = 1
        if shape is not None and len(shape) > 2 and not isinstance(shape[0], tuple):
            positions = math.prod(int(d) for d in shape[1:-1] if d is not None)
        for role, variable, w in weight_bits.values():
            parts.append(_Part(positions * _size(variable), w, a_count))
    elif _is_conv_like(layer):
        for role, variable, w in weight_bits.values():
            if "Transpose" in type(layer).__name__:
                # Each input position is scattered through the whole kernel.
                size = _spatial_size(layer, _input_shape(layer))
            else:
                size = _spatial_size(layer, shape)
            # Separable convs: only the depthwise half sees the quantized input.
            a = FLOAT_BITS if role == "pointwise" else a_count
            parts.append(_Part(size * _size(variable), w, a))
    return parts


def _shown_bits(roles, bits, a_bits, parts):
    """`(w_bits, a_bits)` as the table shows them: an int, "?" (unknown precision) or None
    (a layer without weights or without linear operations)."""
    weight_roles = [r for r in roles if r in _WEIGHT_ROLES]
    if weight_roles:
        w_shown = [bits[r] for r in weight_roles]
        w_bits = "?" if None in w_shown else min(w_shown)
    elif parts:
        w_bits = FLOAT_BITS
    else:
        w_bits = None
    if "input" in roles:
        a_shown = "?" if a_bits is None else a_bits
    else:
        a_shown = FLOAT_BITS if parts else None
    return w_bits, a_shown


def _layer_stats(layer, name):
    """The `_LayerStats` of one leaf layer, `name` being its path in the model."""
    roles = _roles(layer)
    bits, unknown = _role_bits(layer, roles)
    a_bits = bits.get("input", FLOAT_BITS)
    a_count = FLOAT_BITS if a_bits is None else a_bits
    weight_bits = _weight_bits(layer, bits)
    params_by_bits = _params_by_bits(layer, weight_bits)
    shape = _output_shape(layer)
    parts = _linear_parts(layer, shape, weight_bits, a_count)
    w_bits, a_shown = _shown_bits(roles, bits, a_bits, parts)
    return _LayerStats(
        name=name,
        class_name=type(layer).__name__,
        output_shape=shape,
        w_bits=w_bits,
        a_bits=a_shown,
        params_by_bits=params_by_bits,
        parts=parts,
        unknown=unknown,
    )


def _walk(model, prefix=""):
    """Leaf layers of `model`, entering nested models; yields `(path, layer)`."""
    for layer in model.layers:
        path = f"{prefix}{layer.name}"
        if isinstance(layer, keras.Model):
            yield from _walk(layer, prefix=f"{path}/")
        elif isinstance(layer, keras.layers.InputLayer):
            continue
        else:
            yield path, layer


def _fmt_int(n):
    return f"{n:,}" if n else "0"


def _fmt_shape(shape):
    if shape is None:
        return "?"
    if shape and isinstance(shape[0], tuple):
        return ", ".join(_fmt_shape(s) for s in shape)
    return "(" + ", ".join("None" if d is None else str(d) for d in shape) + ")"


def _table(header, rows, align):
    widths = [max(len(str(c)) for c in col) for col in zip(header, *rows)]

    def line(cells):
        return "  ".join(
            str(c).rjust(w) if a == ">" else str(c).ljust(w)
            for c, w, a in zip(cells, widths, align)
        ).rstrip()

    rule = "-" * len(line(header))
    return [rule, line(header), rule.replace("-", "=")] + [line(r) for r in rows] + [rule]


def _check_model(model):
    """Raises the ValueError of `summary` unless `model` is a built `keras.Model`."""
    if not isinstance(model, keras.Model):
        raise ValueError(
            f"summary() expects a keras.Model, received {type(model).__name__}: wrap a layer "
            "as keras.Model(inputs, layer(inputs))."
        )
    if not model.built:
        raise ValueError(
            f"Model {model.name!r} is not built: call it on data or build it with an input "
            "shape (keras.Input) before summary()."
        )


def _layer_record(s):
    """The dict `summary` returns for one layer (an entry of its `layers` list)."""
    return {
        "name": s.name,
        "class_name": s.class_name,
        "output_shape": s.output_shape,
        "weight_bits": s.w_bits,
        "input_bits": s.a_bits,
        "params": s.params,
        "params_by_precision": dict(s.params_by_bits),
        "memory_mbit": s.memory_bits / 1e6,
        "macs": s.macs,
        "bops": s.bops,
        "flops": s.flops,
    }


def _totals(stats):
    """The dict `summary` returns, without the float reference, from the layers' stats."""
    params_by_precision = {}
    for s in stats:
        for b, c in s.params_by_bits.items():
            params_by_precision[b] = params_by_precision.get(b, 0) + c
    params_by_precision = dict(sorted(params_by_precision.items()))
    params = sum(params_by_precision.values())
    memory_bits = sum(b * c for b, c in params_by_precision.items())
    macs = sum(s.macs for s in stats)
    bops = sum(s.bops for s in stats)
    flops = sum(s.flops for s in stats)
    ops = bops / BOPS_PER_OP + flops
    return {
        "params": params,
        "params_by_precision": params_by_precision,
        "memory_mbit": memory_bits / 1e6,
        "macs": macs,
        "bops": bops,
        "flops": flops,
        "ops": ops,
        "unknown_precision": [s.name for s in stats if s.unknown],
        "layers": [_layer_record(s) for s in stats],
    }


def _add_float_reference(result):
    """Adds to `summary`'s `result` the same model in float (every parameter 32-bit, every MAC
    a FLOP) and the ratios to it."""
    params, macs, ops = result["params"], result["macs"], result["ops"]
    float_memory = FLOAT_BITS * params / 1e6
    result.update(
        float_memory_mbit=float_memory,
        float_flops=macs,
        float_ops=float(macs),
        memory_ratio=float_memory / result["memory_mbit"] if result["memory_mbit"] else math.nan,
        ops_ratio=macs / ops if ops else math.nan,
    )


def summary(model, print_fn=print, float_reference=True):
    """Prints and returns the bit widths, memory and operation counts of `model`.

    Per layer: weight and input (activation) bits read from the layer's quantizers, parameters,
    memory, MACs, BOPs and FLOPs; then the totals, parameters by precision, and the ratios to
    the same model in float. See the module docstring for the counting rules (MAD Table 4):
    memory = 32 * #float + k * #k-bit + 1 * #binary parameters (Mbit = 10^6 bits),
    BOPs = MACs * w_bits * a_bits for layers with both operands at <= 8 bits,
    FLOPs = MACs of the other conv/dense layers, OPs = BOPs / 64 + FLOPs.

    Args:
        model: a built functional or Sequential `keras.Model`; nested models are entered
            and their layers listed as `outer/inner`.
        print_fn: called with each line of the table; `None` prints nothing.
        float_reference: also compute the same model in float (memory and OPs) and the
            ratios `memory_ratio = float_memory / memory`, `ops_ratio = float_ops / ops`.

    Returns:
        A dict with `params` (int), `params_by_precision` ({bits: count}), `memory_mbit`,
        `macs`, `bops`, `flops`, `ops`, `unknown_precision` (names of layers whose quantizer
        precision could not be read, counted as float), `layers` (one dict per layer with
        the same quantities) and, with `float_reference`, `float_memory_mbit`, `float_flops`,
        `float_ops`, `memory_ratio` and `ops_ratio`.

    Raises:
        ValueError: if `model` is not a built `keras.Model`, or a conv layer has no known
            output shape (a subclassed model never called on a `keras.Input`).
    """
    _check_model(model)
    stats = [_layer_stats(layer, path) for path, layer in _walk(model)]
    result = _totals(stats)
    if float_reference:
        _add_float_reference(result)
    if print_fn is not None:
        for line in _render(model, stats, result, float_reference):
            print_fn(line)
    return result


def _render(model, stats, result, float_reference):
    def bits(b):
        return "-" if b is None else str(b)

    header = ("Layer (type)", "Output shape", "W bits", "A bits", "Params", "Mem (kbit)", "MACs",
              "BOPs", "FLOPs")
    rows = [
        (
            f"{s.name} ({s.class_name})",
            _fmt_shape(s.output_shape),
            bits(s.w_bits),
            bits(s.a_bits),
            _fmt_int(s.params),
            f"{s.memory_bits / 1e3:,.2f}",
            _fmt_int(s.macs),
            _fmt_int(s.bops),
            _fmt_int(s.flops),
        )
        for s in stats
    ]
    rows.append(
        ("Total", "", "", "", _fmt_int(result["params"]), f"{result['memory_mbit'] * 1e3:,.2f}",
         _fmt_int(result["macs"]), _fmt_int(result["bops"]), _fmt_int(result["flops"]))
    )
    lines = [f'Model: "{model.name}"']
    lines += _table(header, rows, "<<>>>>>>>")
    lines.append("")
    prec_rows = [
        ("float (32-bit)" if b == FLOAT_BITS else f"{b}-bit", _fmt_int(c), f"{b * c / 1e6:,.4f}")
        for b, c in sorted(result["params_by_precision"].items(), reverse=True)
    ]
    lines += _table(("Precision", "Params", "Memory (Mbit)"), prec_rows, "<>>")
    lines.append(f"Memory: {result['memory_mbit']:.4g} Mbit")
    lines.append(
        f"BOPs: {result['bops']:.4g}  FLOPs: {result['flops']:.4g}  "
        f"OPs = BOPs/64 + FLOPs: {result['ops']:.4g}"
    )
    if float_reference:
        lines.append(
            f"Float reference: {result['float_memory_mbit']:.4g} Mbit, {result['float_ops']:.4g} "
            f"OPs -> {result['memory_ratio']:.2f}x smaller, {result['ops_ratio']:.2f}x fewer OPs"
        )
    if result["unknown_precision"]:
        lines.append(
            "? = quantizer without an integer `precision`, counted as 32-bit: "
            + ", ".join(result["unknown_precision"])
        )
    return lines

"""What `binarize` does to each layer, and why: the rules and the printable plan."""

import dataclasses

import keras

from kerasbnn.binarization.graph import MIXING_LAYERS
from kerasbnn.layers import AdderConv2D, QuantizerMixin
from kerasbnn.models.precision import RELU_THRESHOLD

BINARIZED, QUANTIZED, FLOAT, UNCHANGED = "binarized", "quantized", "kept float", "unchanged"

_FIRST = (
    "first layer on raw pixels: a sign() of the image loses most of it, so BNNs keep it float "
    "(XNOR-Net, Bi-Real Net, ReActNet); keep_first=False binarizes it"
)
_LAST = (
    "writes the model output (classifier): kept float by the field's convention for accuracy; "
    "keep_last=False binarizes it"
)
_DEPTHWISE = (
    "depthwise: LCE has no binary depthwise kernel (it would run as a float DEPTHWISE_CONV_2D "
    "plus quantize ops, slower than float)"
)
_SEPARABLE = (
    "separable = depthwise + pointwise in one layer, and LCE has no binary depthwise kernel; "
    "split it into DepthwiseConv2D + Conv2D(1x1) to binarize the pointwise part"
)
_GROUPED = (
    "grouped convolution: LCE runs it binary only with >= 32 input channels per group and "
    "the indirect BGEMM kernel"
)


@dataclasses.dataclass
class LayerPlan:
    """The fate of one layer of the float model.

    Attributes:
        path: `layer` or `outer/inner/layer` for a layer of a nested model.
        class_name: the float layer's class.
        action: `"binarized"` (1-bit weights and inputs: LCE's `LceBconv2d`), `"quantized"`
            (k-bit twin), `"kept float"` (a conv or dense layer left as it is; `reason` says
            why) or `"unchanged"` (a layer without weights to quantize).
        becomes: the class in the new model (`QuantConv2D`, `QuantDense` or `class_name`).
        reason: why a conv / dense layer is kept float (empty otherwise).
        shift: what was inserted before the layer's input, or None (see `binarize`).
        shift_value: the initial value of that shift.
    """

    path: str
    class_name: str
    action: str
    becomes: str
    reason: str = ""
    shift: str = None
    shift_value: float = None

    @property
    def converted(self):
        return self.action in (BINARIZED, QUANTIZED)


def _kept_reason(layer, fact, keep_first, keep_last, keep):
    """Why a Conv2D / Dense layer stays float, or None to convert it."""
    if layer.name in keep:
        return "listed in keep="
    if keep_first and fact.raw:
        return _FIRST
    if keep_last and fact.head:
        return _LAST
    if isinstance(layer, keras.layers.Conv2D) and layer.groups > 1:
        return _GROUPED
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first layout: LCE's binary convolution reads NHWC (channels_last)"
    return None


def _other_reason(layer):
    """Why a weighted layer that is not a plain Conv2D / Dense stays float."""
    if isinstance(layer, (QuantizerMixin, AdderConv2D)):
        return None
    if isinstance(layer, keras.layers.DepthwiseConv2D):
        return _DEPTHWISE
    if isinstance(layer, (keras.layers.SeparableConv1D, keras.layers.SeparableConv2D)):
        return _SEPARABLE
    if isinstance(layer, (keras.layers.Conv2D, keras.layers.Dense)):
        return (
            f"a subclass of {type(layer).__mro__[1].__name__}: its own behaviour cannot be "
            "carried over; replace it by a kerasbnn layer by hand"
        )
    if isinstance(layer, MIXING_LAYERS):
        return f"LCE has no binary kernel for {type(layer).__name__} (only 2-D convolutions)"
    return None


def shift_description(precision, fact):
    """The text of the shift inserted before a converted layer (None: no shift)."""
    shift = precision.input_shift(bool(fact.nonnegative))
    if shift is None:
        return None
    if precision.binary == "dorefa":
        return "fixed -1/2 shift: DoReFa's {0, 1} activations as sign(a - 1/2) (MAD eq. 4)"
    return (
        f"rewritten: input >= 0 by construction (after {fact.nonnegative}), sign() would be +1 "
        f"everywhere: a learnable shift (RSign, ReActNet eq. 4), init -{RELU_THRESHOLD:g}, "
        "now precedes the sign"
    )


def decide(layer, path, fact, precision, keep_first=True, keep_last=True, keep=()):
    """The `LayerPlan` of one leaf layer given its graph facts (see `graph.analyse`)."""
    name = type(layer).__name__
    if type(layer) in (keras.layers.Conv2D, keras.layers.Dense):
        reason = _kept_reason(layer, fact, keep_first, keep_last, keep)
        if reason is not None:
            return LayerPlan(path, name, FLOAT, name, reason)
        action = BINARIZED if precision.is_binary else QUANTIZED
        becomes = "QuantConv2D" if isinstance(layer, keras.layers.Conv2D) else "QuantDense"
        return LayerPlan(path, name, action, becomes, shift=shift_description(precision, fact),
                         shift_value=precision.input_shift(bool(fact.nonnegative)))
    if isinstance(layer, (QuantizerMixin, AdderConv2D)):
        return LayerPlan(path, name, UNCHANGED, name, "already a kerasbnn layer")
    reason = _other_reason(layer)
    if reason is not None:
        return LayerPlan(path, name, FLOAT, name, reason)
    return LayerPlan(path, name, UNCHANGED, name)


def _totals(stats):
    return (stats["params"], stats["memory_mbit"], stats["bops"], stats["flops"], stats["ops"])


@dataclasses.dataclass
class BinarizePlan:
    """What `binarize(model, dry_run=True)` returns: every layer's fate and the costs.

    `print(plan)` (or `plan` alone in a notebook) shows a table of every layer and the
    parameters, memory and operations before and after, counted by `kerasbnn.summary`.

    Attributes:
        model_name: the float model's name.
        tag: the precision, `w1a1` for binary, `w8a8` for an 8-bit twin...
        layers: one `LayerPlan` per leaf layer, in graph order.
        before: `kerasbnn.summary` of the float model (a dict).
        after: `kerasbnn.summary` of the new model (a dict).
    """

    model_name: str
    tag: str
    layers: list
    before: dict
    after: dict

    @property
    def converted(self):
        """Paths of the layers that become `QuantConv2D` / `QuantDense`."""
        return [p.path for p in self.layers if p.converted]

    @property
    def kept_float(self):
        """`{path: reason}` of the conv / dense layers left float."""
        return {p.path: p.reason for p in self.layers if p.action == FLOAT}

    @property
    def rewritten(self):
        """`{path: what was inserted}` for converted layers that got a shift before the sign."""
        return {p.path: p.shift for p in self.layers if p.shift}

    def to_dict(self):
        return dataclasses.asdict(self)

    def _layer_lines(self):
        kinds = [
            p.class_name if p.becomes == p.class_name else f"{p.class_name} -> {p.becomes}"
            for p in self.layers
        ]
        width = max([len(p.path) for p in self.layers] + [5])
        kind_width = max([len(k) for k in kinds] + [4])
        lines = [f"{'Layer':<{width}}  {'Type':<{kind_width}}  Action      Why"]
        lines.append("-" * (width + kind_width + 30))
        for p, kind in zip(self.layers, kinds):
            why = p.reason or (p.shift or "")
            lines.append(f"{p.path:<{width}}  {kind:<{kind_width}}  {p.action:<10}  {why}".rstrip())
        return lines

    def _cost_lines(self):
        before, after = _totals(self.before), _totals(self.after)
        rows = [("Parameters", "{:,}"), ("Memory (Mbit)", "{:,.3f}"), ("BOPs", "{:,.0f}"),
                ("FLOPs", "{:,.0f}"), ("OPs = BOPs/64 + FLOPs", "{:,.0f}")]
        lines = [f"{'':<22}  {'before':>16}  {'after':>16}"]
        for (label, fmt), b, a in zip(rows, before, after):
            lines.append(f"{label:<22}  {fmt.format(b):>16}  {fmt.format(a):>16}")
        if after[1] and after[4]:
            lines.append(
                f"-> {before[1] / after[1]:.2f}x smaller, {before[4] / after[4]:.2f}x fewer OPs"
            )
        return lines

    def __str__(self):
        head = (
            f'binarize plan for "{self.model_name}" ({self.tag}): {len(self.converted)} layers '
            f"converted, {len(self.kept_float)} kept float, {len(self.rewritten)} with a shift"
        )
        return "\n".join([head, "", *self._layer_lines(), "", *self._cost_lines()])

    def _repr_pretty_(self, printer, cycle):  # IPython / Jupyter display
        printer.text(str(self))

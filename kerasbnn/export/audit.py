"""The audit of a converted file against the model's binary layers (LCE.md section 3).

Every layer whose `is_binary` is true must become one `LceBconv2d` op, and no float conv or
fully-connected op may read an `LceDequantize` (a binarized tensor computed in float, slower
than float). The audit counts both and, when binary layers are missing, names the likely
culprits with the reason LCE could not convert them.
"""

import re

from kerasbnn.export import inspect
from kerasbnn.export.report import BinarizationError

__all__ = ["audit_into", "raise_binarization_error"]

_FLOAT_LINEAR_OPS = (
    "CONV_2D",
    "DEPTHWISE_CONV_2D",
    "FULLY_CONNECTED",
    "BATCH_MATMUL",
    "TRANSPOSE_CONV",
)
_BINARIZER_OPS = ("LceDequantize",)


def _mentions(names, layer_name):
    pattern = re.compile(r"(^|/)" + re.escape(layer_name) + r"(_\d+)?(/|$)")
    return any(pattern.search(name) for name in names)


def _unconverted_reason(layer, target):
    from kerasbnn.quantizers import SteHeaviside

    if "Depthwise" in type(layer).__name__:
        return "LCE has no binary depthwise kernel; keep depthwise convolutions float."
    for role in getattr(layer, "_quantizer_roles", ()):
        if isinstance(getattr(layer, f"{role}_quantizer", None), SteHeaviside):
            return (
                f"its {role}_quantizer ste_heaviside outputs {{0, 1}}, which LCE cannot bitpack; "
                "use ste_sign, approx_sign or swish_sign."
            )
    groups = getattr(layer, "groups", 1)
    if groups > 1:
        return "grouped binary convolutions need a multiple of 32 input channels per group."
    pad_values = getattr(layer, "pad_values", 1.0)
    no_kernel = pad_values not in (0.0, 1.0) or (target == "xcore" and pad_values == 0.0)
    if getattr(layer, "padding", None) == "same" and no_kernel:
        return (
            f"'same' padding with pad_values={pad_values} has no binary kernel here; "
            "use pad_values=1.0."
        )
    return (
        "its binarizer or layout is not a pattern the LCE converter recognises "
        "(see LCE.md section 1: binarize once, with where(x >= 0, 1, -1), right before the conv)."
    )


def _audit(graph, binary_layers, target):
    bconvs = [op for op in graph.ops if op.name == "LceBconv2d"]
    fed = []
    suspects = []
    for op in graph.ops:
        if op.name not in _FLOAT_LINEAR_OPS:
            continue
        producers = [graph.producer(i) for i in op.inputs]
        names = [graph.tensors[op.inputs[0]].name, *(graph.tensors[i].name for i in op.outputs)]
        if any(p is not None and p.name in _BINARIZER_OPS for p in producers):
            fed.append(graph.tensors[op.outputs[0]].name)
        for layer in binary_layers:
            if layer not in suspects and _mentions(names, layer.name):
                suspects.append(layer)
    # Tensor names only hint at layers (auto names such as quant_conv2d / quant_conv2d_1 can
    # collide after tracing), so they name culprits only once the op count shows some.
    unconverted = {}
    if len(bconvs) < len(binary_layers):
        unconverted = {layer.name: _unconverted_reason(layer, target) for layer in suspects}
    if len(bconvs) < len(binary_layers) and not unconverted:
        bconv_names = [n for op in bconvs for n in graph.tensor_names(op)]
        unmatched = [layer for layer in binary_layers if not _mentions(bconv_names, layer.name)]
        for layer in unmatched or binary_layers:
            unconverted[layer.name] = (
                "could not be matched to an LceBconv2d op (candidate); "
                + _unconverted_reason(layer, target)
            )
    bitpacked = sum(graph.tensors[op.outputs[0]].dtype == "INT32" for op in bconvs)
    return len(bconvs), bitpacked, unconverted, fed


def audit_into(report, flatbuffer, binary_layers):
    """Fills `report` with the file's size, op counts and audit (`binary_layers`: the layers)."""
    graph = inspect.read_graph(flatbuffer)
    report.flatbuffer = flatbuffer
    report.file_size = len(flatbuffer)
    report.op_counts = inspect.op_counts(flatbuffer)
    (
        report.bconv_ops,
        report.bitpacked_bconv_ops,
        report.unconverted_layers,
        report.float_convs_fed_by_binarizer,
    ) = _audit(graph, binary_layers, report.target)
    if report.op_counts.get("LceDequantize"):
        report.notes.append(
            f"{report.op_counts['LceDequantize']} LceDequantize op(s): a binarized tensor is "
            "used in float (e.g. a 1-bit input quantizer with float weights), which is slower "
            "than float."
        )


def raise_binarization_error(report, path):
    """Raises `BinarizationError` naming the binary layers that did not become `LceBconv2d`."""
    names = ", ".join(report.unconverted_layers) or "(see float convs fed by a binarizer)"
    details = "\n".join(f"  {n}: {r}" for n, r in report.unconverted_layers.items())
    raise BinarizationError(
        f"{len(report.binary_layers)} binary layers in the model but {report.bconv_ops} "
        f"LceBconv2d ops in the converted file; not binary after conversion: {names}.\n{details}\n"
        f"Float convs reading a binarizer: {report.float_convs_fed_by_binarizer or 'none'}. "
        f"Nothing was written to {path}. Pass verify=False to write the file anyway.",
        report,
    )

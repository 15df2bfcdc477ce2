"""Read a TFLite/LCE flatbuffer: which ops it holds and how they are wired.

The flatbuffer is parsed with the schema bindings LCE ships
(`larq_compute_engine.mlir.python.tflite_schema`), so no interpreter is needed.
"""

import collections
import dataclasses
import os

from larq_compute_engine.mlir.python import tflite_schema

_BUILTIN_NAMES = {
    value: name
    for name, value in vars(tflite_schema.BuiltinOperator).items()
    if not name.startswith("_")
}
_TENSOR_TYPE_NAMES = {
    value: name
    for name, value in vars(tflite_schema.TensorType).items()
    if not name.startswith("_")
}


@dataclasses.dataclass(frozen=True)
class TensorInfo:
    """One tensor of the main subgraph: `name`, `dtype` (TFLite type name) and `shape`."""

    name: str
    dtype: str
    shape: tuple


@dataclasses.dataclass(frozen=True)
class OpInfo:
    """One operator of the main subgraph, in execution order.

    Attributes:
        name: builtin name (`"CONV_2D"`) or custom code (`"LceBconv2d"`).
        inputs: indices into `Graph.tensors` (optional inputs, -1 in the file, are dropped).
        outputs: indices into `Graph.tensors`.
    """

    name: str
    inputs: tuple
    outputs: tuple


@dataclasses.dataclass(frozen=True)
class Graph:
    """The main subgraph of a flatbuffer: its tensors and ops, with producer lookup."""

    tensors: tuple
    ops: tuple

    def producer(self, tensor_index):
        """The op that writes `tensor_index`, or None for model inputs and constants."""
        for op in self.ops:
            if tensor_index in op.outputs:
                return op
        return None

    def tensor_names(self, op):
        """Names of every input and output tensor of `op`."""
        return [self.tensors[i].name for i in (*op.inputs, *op.outputs)]


def _read_bytes(path_or_bytes):
    if isinstance(path_or_bytes, (bytes, bytearray, memoryview)):
        return bytes(path_or_bytes)
    if isinstance(path_or_bytes, (str, os.PathLike)):
        with open(path_or_bytes, "rb") as f:
            return f.read()
    raise ValueError(
        f"Expected a .tflite path or the flatbuffer bytes, received {type(path_or_bytes).__name__}."
    )


def _op_name(code):
    custom = code.CustomCode()
    if custom:
        return custom.decode()
    # Files written by new converters keep small codes in the deprecated field too;
    # the larger of the two is the real one (TFLite's schema_utils does the same).
    return _BUILTIN_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "UNKNOWN")


def read_graph(path_or_bytes):
    """Parses the main subgraph of a flatbuffer.

    Args:
        path_or_bytes: path of a `.tflite` file, or its bytes.

    Returns:
        A `Graph` with `TensorInfo` tensors and `OpInfo` ops in execution order.

    Raises:
        ValueError: if the bytes are not a TFLite flatbuffer.
    """
    buf = _read_bytes(path_or_bytes)
    if len(buf) < 8 or buf[4:8] != b"TFL3":
        raise ValueError("Not a TFLite flatbuffer (file identifier 'TFL3' missing).")
    model = tflite_schema.Model.GetRootAsModel(buf, 0)
    codes = [_op_name(model.OperatorCodes(i)) for i in range(model.OperatorCodesLength())]
    subgraph = model.Subgraphs(0)
    tensors = []
    for i in range(subgraph.TensorsLength()):
        t = subgraph.Tensors(i)
        shape = tuple(int(d) for d in t.ShapeAsNumpy()) if t.ShapeLength() else ()
        tensors.append(
            TensorInfo(t.Name().decode(), _TENSOR_TYPE_NAMES.get(t.Type(), str(t.Type())), shape)
        )
    ops = []
    for i in range(subgraph.OperatorsLength()):
        op = subgraph.Operators(i)
        inputs = tuple(int(j) for j in op.InputsAsNumpy() if j >= 0) if op.InputsLength() else ()
        outputs = tuple(int(j) for j in op.OutputsAsNumpy()) if op.OutputsLength() else ()
        ops.append(OpInfo(codes[op.OpcodeIndex()], inputs, outputs))
    return Graph(tuple(tensors), tuple(ops))


def list_ops(path_or_bytes):
    """Op names of a flatbuffer's main subgraph, in execution order.

    Args:
        path_or_bytes: path of a `.tflite` file, or its bytes.

    Returns:
        A list such as `["CONV_2D", "LceQuantize", "LceBconv2d", ...]`.

    Example:
    ```python
    ops = kerasbnn.export.list_ops("model.tflite")
    assert ops.count("LceBconv2d") == 16
    ```
    """
    return [op.name for op in read_graph(path_or_bytes).ops]


def op_counts(path_or_bytes):
    """`{op name: count}` of a flatbuffer's main subgraph, sorted by name."""
    return dict(sorted(collections.Counter(list_ops(path_or_bytes)).items()))

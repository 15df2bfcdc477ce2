"""Runs the LCE converter in its own process (`python -m kerasbnn.export._worker JSON`).

The converter is native code: an LLVM abort kills whatever process it runs in. The parent
(`kerasbnn.export.converter.convert_saved_model`) reads this process's exit status and stderr.

JSON keys: `saved_model_dir`, `output` (file the flatbuffer is written to), `target`,
`default_int8_range` (null or [min, max]).

`larq_compute_engine.convert_saved_model` is a thin wrapper: it imports TensorFlow (5-10 s
of start-up, most of a small conversion), reads the SavedModel schema version, and calls
`convert_saved_model_to_tflite_flatbuffer` from LCE's self-contained native module
`larq_compute_engine/mlir/_tf_tfl_flatbuffer*.so`. This worker makes that same call without
importing TensorFlow, and falls back to the wrapper if the native module is not found where
LCE 0.16 puts it. We never ask for int8 model inputs/outputs, the wrapper's only other step.
"""

import glob
import importlib.util
import json
import os
import sys

_SERVING_TAG = "serve"
_SERVING_SIGNATURE = "serving_default"


def _varint(buf, pos):
    value, shift = 0, 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, pos
        shift += 7


def saved_model_schema_version(saved_model_dir):
    """Field 1 (`saved_model_schema_version`) of `saved_model.pb`, read from the wire format."""
    with open(os.path.join(saved_model_dir, "saved_model.pb"), "rb") as f:
        buf = f.read()
    try:
        return _schema_version(buf)
    except IndexError:
        raise ValueError(
            f"Cannot parse {saved_model_dir}/saved_model.pb: truncated protobuf."
        ) from None


def _schema_version(buf):
    pos = 0
    while pos < len(buf):
        key, pos = _varint(buf, pos)
        field, wire_type = key >> 3, key & 7
        if wire_type == 0:
            value, pos = _varint(buf, pos)
            if field == 1:
                return value
        elif wire_type == 2:
            length, pos = _varint(buf, pos)
            pos += length
        elif wire_type == 1:
            pos += 8
        elif wire_type == 5:
            pos += 4
        else:
            raise ValueError(f"Cannot parse saved_model.pb: unexpected wire type {wire_type}.")
    raise ValueError("Cannot parse saved_model.pb: no saved_model_schema_version.")


def _native_converter():
    spec = importlib.util.find_spec("larq_compute_engine")
    if spec is None or not spec.submodule_search_locations:
        return None
    for location in spec.submodule_search_locations:
        for path in glob.glob(os.path.join(location, "mlir", "_tf_tfl_flatbuffer*.so")):
            module_spec = importlib.util.spec_from_file_location("_tf_tfl_flatbuffer", path)
            module = importlib.util.module_from_spec(module_spec)
            module_spec.loader.exec_module(module)
            return getattr(module, "convert_saved_model_to_tflite_flatbuffer", None)
    return None


def convert(saved_model_dir, target, default_int8_range):
    """The flatbuffer bytes of `saved_model_dir` (serving_default signature)."""
    if target not in ("arm", "xcore"):
        raise ValueError(f'Expected target "arm" or "xcore", got {target!r}.')
    native = _native_converter()
    if native is None:
        import larq_compute_engine as lce

        return lce.convert_saved_model(
            saved_model_dir, target=target, experimental_default_int8_range=default_int8_range
        )
    version = saved_model_schema_version(saved_model_dir)
    if version not in (1, 2):
        raise ValueError(f"SavedModel file format({version}) is not supported")
    return native(
        saved_model_dir, [_SERVING_TAG], [_SERVING_SIGNATURE], version, target, default_int8_range
    )


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    options = json.loads(argv[0])
    int8_range = options.get("default_int8_range")
    flatbuffer = convert(
        options["saved_model_dir"],
        options.get("target", "arm"),
        tuple(int8_range) if int8_range else None,
    )
    with open(options["output"], "wb") as f:
        f.write(flatbuffer)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Latency of a TFLite/LCE flatbuffer on this machine, through LCE's Python interpreter."""

import statistics
import time

import numpy as np

from kerasbnn.export.inspect import _read_bytes


def measure_latency(
    path_or_bytes,
    *,
    num_threads=1,
    runs=20,
    warmup=3,
    use_indirect_bgemm=True,
    use_xnnpack=False,
    use_reference_bconv=False,
    seed=0,
    statistic="median",
):
    """Wall time of one inference in milliseconds: the median (or min) over `runs`.

    Runs `larq_compute_engine.tflite.python.interpreter.Interpreter` on one random input
    (batch 1) `warmup` times untimed, then `runs` times timed. On x86, LCE ships only
    portable binary kernels; its default BGEMM kernel is 4-6x slower than the indirect one,
    so `use_indirect_bgemm=True` is the default (LCE.md section 5). Float models are fair
    only with `use_xnnpack=True`.

    Args:
        path_or_bytes: a `.tflite` path or the flatbuffer bytes.
        num_threads: interpreter threads.
        runs: timed inferences; the median is returned.
        warmup: untimed inferences first.
        use_indirect_bgemm: LCE's indirect BGEMM kernel for `LceBconv2d`.
        use_xnnpack: TFLite's XNNPACK delegate for float (and int8) builtin ops.
        use_reference_bconv: LCE's reference `LceBconv2d` kernel (slow; for checking).
        seed: seed of the random input.
        statistic: "median" (LCE's benchmark convention) or "min" (on a machine shared
            with other jobs, contention only ever adds time, so the minimum is the
            steadier estimate of the uncontended latency).

    Returns:
        The latency in ms (float).

    Raises:
        ValueError: for `runs < 1`, `num_threads < 1`, an unknown `statistic` or a
            non-float/int8 model input.
    """
    if runs < 1 or num_threads < 1 or warmup < 0:
        raise ValueError(
            f"runs and num_threads must be >= 1 and warmup >= 0, received runs={runs}, "
            f"num_threads={num_threads}, warmup={warmup}."
        )
    if statistic not in ("median", "min"):
        raise ValueError(f'statistic must be "median" or "min", received {statistic!r}.')
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    interpreter = Interpreter(
        _read_bytes(path_or_bytes),
        num_threads=num_threads,
        use_reference_bconv=use_reference_bconv,
        use_indirect_bgemm=use_indirect_bgemm,
        use_xnnpack=use_xnnpack,
    )
    rng = np.random.default_rng(seed)
    inputs = []
    for shape, dtype in zip(interpreter.input_shapes, interpreter.input_types):
        dtype = np.dtype(dtype)
        if dtype == np.float32:
            inputs.append(rng.standard_normal(shape).astype(np.float32))
        elif dtype == np.int8:
            inputs.append(rng.integers(-128, 128, size=shape, dtype=np.int8))
        else:
            raise ValueError(
                f"measure_latency supports float32 and int8 inputs, the model takes {dtype}."
            )
    wrapper = interpreter.interpreter
    for _ in range(warmup):
        wrapper.predict(inputs)
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        wrapper.predict(inputs)
        times.append(time.perf_counter() - start)
    return 1e3 * (statistics.median(times) if statistic == "median" else min(times))

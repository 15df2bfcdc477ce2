"""Latency of TFLite/LCE flatbuffers on this machine, through LCE's Python interpreter."""

import statistics
import time

import numpy as np

from kerasbnn.export.inspect import _read_bytes

STATISTICS = ("median", "min")


def _check(runs, num_threads, warmup, statistic):
    if runs < 1 or num_threads < 1 or warmup < 0:
        raise ValueError(
            f"runs and num_threads must be >= 1 and warmup >= 0, received runs={runs}, "
            f"num_threads={num_threads}, warmup={warmup}."
        )
    if statistic not in STATISTICS:
        raise ValueError(f'statistic must be "median" or "min", received {statistic!r}.')


def _runner(path_or_bytes, num_threads, seed, **options):
    """A zero-argument function that runs one batch-1 inference on a fixed random input."""
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    interpreter = Interpreter(_read_bytes(path_or_bytes), num_threads=num_threads, **options)
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
    return lambda: wrapper.predict(inputs)


def _summarize(times, statistic):
    return 1e3 * (statistics.median(times) if statistic == "median" else min(times))


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
    only with `use_xnnpack=True`. To compare models on a machine shared with other jobs,
    use `compare_latency`, which interleaves their runs.

    Args:
        path_or_bytes: a `.tflite` path or the flatbuffer bytes.
        num_threads: interpreter threads.
        runs: timed inferences.
        warmup: untimed inferences first.
        use_indirect_bgemm: LCE's indirect BGEMM kernel for `LceBconv2d`.
        use_xnnpack: TFLite's XNNPACK delegate for float (and int8) builtin ops.
        use_reference_bconv: LCE's reference `LceBconv2d` kernel (slow; for checking).
        seed: seed of the random input.
        statistic: "median" (LCE's benchmark convention) or "min".

    Returns:
        The latency in ms (float).

    Raises:
        ValueError: for `runs < 1`, `num_threads < 1`, an unknown `statistic` or a
            non-float/int8 model input.
    """
    _check(runs, num_threads, warmup, statistic)
    run = _runner(
        path_or_bytes,
        num_threads,
        seed,
        use_reference_bconv=use_reference_bconv,
        use_indirect_bgemm=use_indirect_bgemm,
        use_xnnpack=use_xnnpack,
    )
    for _ in range(warmup):
        run()
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return _summarize(times, statistic)


def compare_latency(models, *, num_threads=1, runs=20, warmup=3, seed=0, statistic="median"):
    """Latencies of several models measured in interleaved runs, in milliseconds.

    Each timed round runs every model once, in a shuffled order, so load from other
    processes falls on all of them alike and their ratios stay meaningful on a shared
    machine.

    Args:
        models: `{name: path_or_bytes}` or `{name: (path_or_bytes, options)}`, where
            `options` holds `use_indirect_bgemm` / `use_xnnpack` / `use_reference_bconv`
            (defaults as in `measure_latency`).
        num_threads, runs, warmup, seed, statistic: as in `measure_latency`.

    Returns:
        `{name: latency in ms}`.

    Raises:
        ValueError: as `measure_latency`, or for an empty `models`.

    Example:
    ```python
    ms = compare_latency({"binary": ("b.tflite", {}), "float": ("f.tflite", {"use_xnnpack": True})})
    print(ms["float"] / ms["binary"])
    ```
    """
    _check(runs, num_threads, warmup, statistic)
    if not models:
        raise ValueError("models must name at least one flatbuffer.")
    runners = {}
    for name, spec in models.items():
        source, options = spec if isinstance(spec, tuple) else (spec, {})
        options = {"use_indirect_bgemm": True, **options}
        runners[name] = _runner(source, num_threads, seed, **options)
    for _ in range(warmup):
        for run in runners.values():
            run()
    times = {name: [] for name in runners}
    order = list(runners)
    rng = np.random.default_rng(seed)
    for _ in range(runs):
        rng.shuffle(order)  # no model always runs right after the same other one
        for name in order:
            start = time.perf_counter()
            runners[name]()
            times[name].append(time.perf_counter() - start)
    return {name: _summarize(values, statistic) for name, values in times.items()}

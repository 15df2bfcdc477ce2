"""Times `.tflite` files on an ARM device with LCE's `lce_benchmark_model`, over ssh or adb.

For each model: copy it to the device (scp / adb push), run `lce_benchmark_model` there with
one model, batch 1, `--num_threads` threads, and read the average inference time from its
output (TFLite's benchmark tool prints `Inference timings in us: Init: ..., First inference:
..., Warmup (avg): ..., Inference (avg): ...`). The benchmark binary itself is copied first
when `--binary` names a local file (see tflite/README.md for where to get it).

    # Raspberry Pi 4/5 with a 64-bit OS, reachable as pi@raspberrypi.local
    python tflite/device_benchmark.py student.tflite float.tflite --target pi \
        --host pi@raspberrypi.local --binary ~/Downloads/lce_benchmark_model_aarch64

    # Android phone over USB (adb devices lists it)
    python tflite/device_benchmark.py student.tflite --target android \
        --binary ~/Downloads/lce_benchmark_model_android_arm64 --threads 4

    # Print the commands instead of running them
    python tflite/device_benchmark.py student.tflite --target pi --host pi@rpi --dry-run

The last lines are a table `model  avg ms  init ms` and, with `--json`, the same numbers in a
file. Exit status: 0 on success, 1 when a command fails or the output has no timing.
"""

import argparse
import json
import os
import re
import shlex
import subprocess
import sys

TARGETS = ("pi", "android")
DEFAULT_REMOTE_DIR = {
    "pi": "/tmp/kerasbnn_benchmark",
    "android": "/data/local/tmp/kerasbnn_benchmark",  # adb may only execute files under here
}
REMOTE_BINARY = "lce_benchmark_model"

_NUMBER = r"([0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?)"
# TFLite >= 2.2 (the LCE 0.x binaries): BenchmarkLoggingListener::OnBenchmarkEnd.
_TIMINGS = re.compile(
    r"Inference timings in us:\s*Init:\s*" + _NUMBER + r",\s*First inference:\s*" + _NUMBER
    + r",\s*Warmup \(avg\):\s*" + _NUMBER + r",\s*Inference \(avg\):\s*" + _NUMBER
)
# Older TFLite benchmark tools: "Average inference timings in us: Warmup: W, Init: I, Inference: X".
_OLD_TIMINGS = re.compile(
    r"Average inference timings in us:\s*Warmup:\s*" + _NUMBER + r",\s*Init:\s*" + _NUMBER
    + r",\s*Inference:\s*" + _NUMBER
)
# One statistics line per benchmark phase: "count=50 first=... min=... max=... avg=... std=...".
_STATS = re.compile(r"count=([0-9]+)\s+first=\S+\s+curr=\S+\s+min=" + _NUMBER + r"\s+max="
                    + _NUMBER + r"\s+avg=" + _NUMBER + r"\s+std=" + _NUMBER
                    + r"(?:.*?median=" + _NUMBER + r")?")


class BenchmarkOutputError(ValueError):
    """The benchmark output holds no inference timing (the tool failed or was cut off)."""


def parse_benchmark_output(text):
    """Latency numbers from the output of `lce_benchmark_model` (TFLite's benchmark_model).

    Args:
        text: the tool's combined stdout and stderr.

    Returns:
        A dict with `avg_ms` (mean inference time of the timed runs, the number to report),
        `init_ms`, `first_ms` and `warmup_avg_ms` when printed, and from the last statistics
        line `count`, `min_ms`, `max_ms`, `std_ms` and `median_ms` (newer tools only).

    Raises:
        BenchmarkOutputError: if no timing line is found; the message quotes the output's tail.
    """
    result = {}
    match = None
    for match in _TIMINGS.finditer(text):
        pass
    if match:
        init, first, warmup, avg = (float(v) for v in match.groups())
        result.update(init_ms=init / 1e3, first_ms=first / 1e3, warmup_avg_ms=warmup / 1e3,
                      avg_ms=avg / 1e3)
    else:
        for match in _OLD_TIMINGS.finditer(text):
            pass
        if match:
            warmup, init, avg = (float(v) for v in match.groups())
            result.update(init_ms=init / 1e3, warmup_avg_ms=warmup / 1e3, avg_ms=avg / 1e3)
    stats = _STATS.findall(text)
    if stats:
        count, low, high, avg, std, median = stats[-1]
        result.update(count=int(count), min_ms=float(low) / 1e3, max_ms=float(high) / 1e3,
                      std_ms=float(std) / 1e3)
        if median:
            result["median_ms"] = float(median) / 1e3
        result.setdefault("avg_ms", float(avg) / 1e3)
    if "avg_ms" not in result:
        tail = "\n".join(text.strip().splitlines()[-8:]) or "(no output)"
        raise BenchmarkOutputError(
            "No inference timing in the benchmark output (expected a line 'Inference timings in "
            f"us: ...' or 'count=... avg=...'); the benchmark probably failed. Output tail:\n{tail}"
        )
    return result


def benchmark_flags(args, remote_model):
    """The `lce_benchmark_model` command-line flags for one model."""
    flags = [f"--graph={remote_model}", f"--num_threads={args.threads}",
             f"--num_runs={args.runs}", f"--warmup_runs={args.warmup}"]
    if args.indirect_bgemm:
        flags.append("--use_indirect_bgemm=true")
    if args.xnnpack is not None:
        flags.append(f"--use_xnnpack={'true' if args.xnnpack else 'false'}")
    return flags + list(args.extra)


def _adb(args):
    return ["adb"] + (["-s", args.serial] if args.serial else [])


def setup_commands(args):
    """Commands that prepare the device: the remote folder and, with `--binary`, the tool."""
    remote_dir = args.remote_dir
    binary = f"{remote_dir}/{REMOTE_BINARY}"
    if args.target == "pi":
        commands = [["ssh", args.host, "mkdir", "-p", remote_dir]]
        if args.binary:
            commands += [["scp", args.binary, f"{args.host}:{binary}"],
                         ["ssh", args.host, "chmod", "+x", binary]]
    else:
        commands = [_adb(args) + ["shell", "mkdir", "-p", remote_dir]]
        if args.binary:
            commands += [_adb(args) + ["push", args.binary, binary],
                         _adb(args) + ["shell", "chmod", "+x", binary]]
    return commands


def model_commands(args, model):
    """`(copy, run)` commands for one local `.tflite` file."""
    remote_model = f"{args.remote_dir}/{os.path.basename(model)}"
    binary = f"{args.remote_dir}/{REMOTE_BINARY}"
    run = [binary] + benchmark_flags(args, remote_model)
    if args.target == "pi":
        # ssh runs one remote shell command line: quote it as one string.
        return (["scp", model, f"{args.host}:{remote_model}"],
                ["ssh", args.host, shlex.join(run)])
    return (_adb(args) + ["push", model, remote_model], _adb(args) + ["shell", shlex.join(run)])


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("models", nargs="+", help=".tflite files to time")
    p.add_argument("--target", choices=TARGETS, required=True,
                   help="pi: ssh/scp to an aarch64 Linux board; android: adb")
    p.add_argument("--host", help="ssh destination for --target pi, e.g. pi@raspberrypi.local")
    p.add_argument("--serial", help="adb device serial for --target android (adb -s)")
    p.add_argument("--binary", help="local lce_benchmark_model to copy to the device first; "
                   f"without it <remote-dir>/{REMOTE_BINARY} must already be there")
    p.add_argument("--remote-dir", help="working folder on the device (default: "
                   + ", ".join(f"{k}: {v}" for k, v in DEFAULT_REMOTE_DIR.items()) + ")")
    p.add_argument("--threads", type=int, default=1, help="--num_threads of the benchmark")
    p.add_argument("--runs", type=int, default=50, help="--num_runs (timed inferences)")
    p.add_argument("--warmup", type=int, default=5, help="--warmup_runs")
    p.add_argument("--indirect-bgemm", action="store_true",
                   help="LCE's indirect BGEMM kernel (on ARM the default kernel is the tuned one)")
    p.add_argument("--xnnpack", action=argparse.BooleanOptionalAction, default=None,
                   help="pass --use_xnnpack=true/false (default: the tool's own default)")
    p.add_argument("--extra", nargs=argparse.REMAINDER, default=[],
                   help="further lce_benchmark_model flags, passed through (put last)")
    p.add_argument("--timeout", type=float, default=600, help="seconds allowed to each command")
    p.add_argument("--json", help="write the parsed numbers of every model to this file")
    p.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    args = p.parse_args(argv)
    if args.target == "pi" and not args.host:
        p.error("--target pi needs --host (the ssh destination, e.g. pi@raspberrypi.local)")
    if args.target == "android" and args.host:
        p.error("--host is for --target pi; use --serial to pick an adb device")
    for name in ("threads", "runs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, received {getattr(args, name)}")
    if args.warmup < 0:
        p.error(f"--warmup must be >= 0, received {args.warmup}")
    if not args.dry_run:
        missing = [m for m in args.models + ([args.binary] if args.binary else [])
                   if not os.path.isfile(m)]
        if missing:
            p.error(f"no such file: {', '.join(missing)}")
    bad = [m for m in args.models if not m.endswith(".tflite")]
    if bad:
        p.error(f"expected .tflite files, received {', '.join(bad)}")
    args.remote_dir = args.remote_dir or DEFAULT_REMOTE_DIR[args.target]
    return args


def _run(command, timeout, print_fn):
    print_fn("$ " + shlex.join(command))
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout)
    output = result.stdout + result.stderr
    if result.returncode != 0:
        tail = "\n".join(output.strip().splitlines()[-8:])
        raise RuntimeError(f"command failed with exit status {result.returncode}: "
                           f"{shlex.join(command)}\n{tail}")
    return output


def main(argv=None, print_fn=print):
    """Runs (or, with `--dry-run`, prints) the benchmark; returns the exit status."""
    args = parse_args(argv)
    if args.dry_run:
        for command in setup_commands(args):
            print_fn(shlex.join(command))
        for model in args.models:
            for command in model_commands(args, model):
                print_fn(shlex.join(command))
        return 0
    results = {}
    try:
        for command in setup_commands(args):
            _run(command, args.timeout, print_fn)
        for model in args.models:
            copy, run = model_commands(args, model)
            _run(copy, args.timeout, print_fn)
            results[model] = parse_benchmark_output(_run(run, args.timeout, print_fn))
    except (RuntimeError, BenchmarkOutputError, subprocess.TimeoutExpired) as error:
        print_fn(f"error: {error}")
        return 1
    print_fn(f"\n{'model':<40}{'avg ms':>10}{'init ms':>10}")
    for model, numbers in results.items():
        init = numbers.get("init_ms")
        print_fn(f"{os.path.basename(model):<40}{numbers['avg_ms']:>10.2f}"
                 f"{'' if init is None else f'{init:.1f}':>10}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"target": args.target, "threads": args.threads, "models": results}, f,
                      indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""The run's report: `report.md` and its plots (`plots/accuracy.png`,
`plots/size_latency.png`), written from the run's JSON results only, so a resumed run can
write it again: the teachers, the methods side by side with the budget each had, what each
method adds (its `report` hook in the methods' registry, e.g. MAD's fusion weights), and
each model's LCE file, size, latency and verification. No method is named here."""

import os

from kerasbnn import methods
from kerasbnn.run import layout
from kerasbnn.run.arms import arms, teacher_bits


def _verification_cell(converted):
    """Max |Keras - LCE|, top-1 agreement and rounding flips of one conversion result."""
    if converted.get("max_abs_diff") is None:
        return "not verified"
    cell = f"max diff {converted['max_abs_diff']:.1e}"
    if converted.get("top1_agreement") is not None:
        cell += f", top-1 agree {100 * converted['top1_agreement']:.0f}%"
    flips = sum((converted.get("flipped_bits") or {}).values())
    if flips:
        layer, bits = converted["first_flip"]
        cell += f", {flips} rounding flip(s), first {layer} ({bits})"
    return cell


def _label(name):
    return "binary, no KD" if name == "none" else f"binary, {name}"


def _plot_accuracy(config, run, accuracy):
    from matplotlib import pyplot as plt

    fig, ax = plt.subplots(figsize=(max(7, 1.1 * len(accuracy)), 3.5))
    ax.bar(list(accuracy), [100 * v for v in accuracy.values()], color="tab:blue")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"{config.model.arch} on {config.data.name}")
    ax.tick_params(axis="x", rotation=30)
    for i, v in enumerate(accuracy.values()):
        ax.text(i, 100 * v, f"{100 * v:.1f}", ha="center", va="bottom", fontsize=8)
    fig.tight_layout()
    fig.savefig(run.plot("accuracy"), dpi=120)
    plt.close(fig)


def _plot_size_latency(config, run, converted):
    from matplotlib import pyplot as plt

    names = list(converted)
    colors = ["tab:gray"] + ["tab:orange"] * (len(names) - 1)
    fig, axes = plt.subplots(1, 2, figsize=(max(7, 1.2 * len(names)), 3))
    axes[0].bar(names, [converted[n]["file_size"] / 1e3 for n in names], color=colors)
    axes[0].set_ylabel("TFLite size (kB)")
    axes[1].bar(names, [converted[n]["latency_ms"] for n in names], color=colors)
    axes[1].set_ylabel(f"latency (ms, {config.benchmark.threads} thread)")
    for ax in axes:
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle("binary students vs float model (this machine)")
    fig.tight_layout()
    fig.savefig(run.plot("size_latency"), dpi=120)
    plt.close(fig)


#: What the methods' table says of an arm's teachers (`teachers_init` in its results).
TEACHERS_INIT = {"float": " (teachers made from the float one)",
                 "random": " (teachers trained apart, each from its own start)"}


def _method_lines(run, names, accuracy):
    """The methods side by side: accuracy, the difference to the student without KD, and the
    budget each arm had: the training images through its student, the minutes it trained."""
    base = accuracy.get(_label("none"))
    lines = ["| method | test accuracy | vs no KD | images through the student | minutes |",
             "|---|---|---|---|---|"]
    for name in names:
        value, result = accuracy[_label(name)], run.read_json(run.student_step(name))
        delta = "" if base is None or name == "none" else f"{100 * (value - base):+.2f} pt"
        images = "" if result.get("images") is None else f"{result['images']:,}"
        seconds = result.get("train_seconds")
        minutes = "" if seconds is None else f"{seconds / 60:.1f}"
        label = name + TEACHERS_INIT.get(result.get("teachers_init"), "")
        lines.append(f"| {label} | {100 * value:.2f}% | {delta} | {images} | {minutes} |")
    return lines


def _method_parts(config, run, names):
    """`(lines, plots)`: what each method of `names` adds to the report (its `report` hook in
    `kerasbnn.methods.METHODS`), in the order of `names`; plots as markdown images."""
    lines, plots = [], []
    for name in names:
        hook = methods.METHODS.get(name).report
        if hook is not None:
            own_lines, own_plots = hook(config, run)
            lines += own_lines
            plots += [f"![{alt}]({layout.plot(plot)})" for alt, plot in own_plots]
    return lines, plots


def _teacher_lines(run, bits_list):
    """Each teacher's test accuracy, its gap to the float teacher, and where it started (the
    k-bit teachers: after copying the float weights and recomputing BatchNorm)."""
    results = {b: run.read_json(run.teacher_step(b)) for b in bits_list}
    if 32 not in results or len(results) < 2:
        return []
    base = results[32]["accuracy"]
    lines = ["| teacher | test accuracy | vs float | copied + BN, before fine-tuning (validation) "
             "| validation |",
             "|---|---|---|---|---|"]
    percent = lambda value: "" if value is None else f"{100 * value:.2f}%"  # noqa: E731
    for bits, r in results.items():
        name = "float" if bits == 32 else f"{bits}-bit {r.get('quantizer') or ''}".strip()
        gap = "" if bits == 32 else f"{100 * (r['accuracy'] - base):+.2f} pt"
        lines.append(f"| {name} | {percent(r['accuracy'])} | {gap} | "
                     f"{percent(r.get('start_accuracy'))} | {percent(r.get('val_accuracy'))} |")
    return [*lines, ""]


def _budget_line(config):
    t, d, s = config.teachers, config.data, config.student
    split = f", {d.val_split:.0%} of them the validation split" if d.val_split else ""
    steps = (f"ReActNet's two steps of {s.epochs} epochs each (real-valued weights, then binary)"
             if s.schedule == "two_step" else f"{s.epochs} epochs")
    teachers = (f"float teacher {t.float_epochs or t.epochs} epochs, k-bit {t.quantizer} "
                f"teachers fine-tuned {t.epochs} epochs from it (teachers.init: float)"
                if t.init == "float" else
                f"every teacher ({t.quantizer} below 32 bits) trained apart from its own random "
                f"start for {t.float_epochs or t.epochs} epochs (teachers.init: random, CMT-KD "
                "§4.2's separately trained teachers)")
    return (f"Budget: {teachers}; students {steps} from {s.init} "
            f"init; width {config.model.width_multiplier}, "
            f"train_limit {d.train_limit}{split}; test images {d.val_limit or 'all'}; seed "
            f"{config.seed}. Every method trained on the same teachers, data and seed: the same "
            "student network from the same initial weights, the same batches, and as many "
            "images through the student (the methods' table). One seed: differences of 2-3 "
            "points are within seed noise at this budget.")


def write_report(config, run, print_fn=print):
    """`report.md` and the PNG plots, from the JSON results only (so a resume can redo it)."""
    import matplotlib

    matplotlib.use("Agg")
    names = arms(config)
    accuracy = {f"{b}-bit teacher" if b != 32 else "float teacher":
                run.read_json(run.teacher_step(b))["accuracy"]
                for b in teacher_bits(config, names)}
    accuracy.update({_label(n): run.read_json(run.student_step(n))["accuracy"] for n in names})
    teachers = _teacher_lines(run, teacher_bits(config, names))
    converted = {name: run.read_json(run.convert_step(name)) for name in ("float_teacher", *names)}
    _plot_accuracy(config, run, accuracy)
    _plot_size_latency(config, run, converted)
    float_c, best = converted["float_teacher"], converted[names[-1]]
    own_lines, own_plots = _method_parts(config, run, names)
    plots = [f"![accuracy]({layout.plot('accuracy')})", *own_plots]
    lines = [
        f"# kerasbnn report: {config.model.arch} on {config.data.name}",
        "",
        _budget_line(config),
        "",
        "| model | test accuracy |",
        "|---|---|",
        *[f"| {k} | {100 * v:.2f}% |" for k, v in accuracy.items()],
        "",
        *teachers,
        *_method_lines(run, names, accuracy),
        "",
        *own_lines,
        "| file | size | latency (ms) | LceBconv2d | Keras vs LCE | memory (Mbit) | OPs |",
        "|---|---|---|---|---|---|---|",
        *[f"| {layout.tflite(n)} | {c['file_size'] / 1e3:.1f} kB | {c['latency_ms']:.3f} | "
          f"{c['bconv_ops']} | {_verification_cell(c)} | {c['summary']['memory_mbit']:.3f} | "
          f"{c['summary']['ops']:.3g} |" for n, c in converted.items()],
        "",
        f"Binary student ({names[-1]}) vs float: size "
        f"{float_c['file_size'] / best['file_size']:.2f}x smaller, latency "
        f"{float_c['latency_ms'] / best['latency_ms']:.2f}x (x86 has only LCE's portable kernels; "
        "ARM devices are where binary convolutions pay off: see tflite/README.md).",
        "",
        *plots,
        f"![size and latency]({layout.plot('size_latency')})",
        "",
    ]
    path = run.report()
    with open(path + ".tmp", "w") as f:
        f.write("\n".join(lines))
    os.replace(path + ".tmp", path)
    return path, accuracy

"""The results of a run: the table, its verdict against seed noise, the
plot, `results.json`/`results.md` and the best student.
"""

import json
import time

import numpy as np

from keras_cskd.cli._common import METHOD_LABELS
from keras_cskd.statistics import paired_difference


def _write_report(args, job, results, scores, started):
    """Prints the table and verdict; writes results.json/.md/.png and the best student."""
    import keras

    out, budget = job.out, job.budget
    backend = keras.backend.backend()
    _compare_with_ce(results)
    best = max((r for r in results if r["compared"]), key=lambda r: r["accuracy"])
    _copy_best(best, out)
    several = len(scores["accuracies"]) > 1
    teacher_accuracy = scores["ensemble"] if several else scores["accuracies"][0]
    table = _table(results, scores, job.seeds)
    verdict = _verdict(results, job.seeds, len(job.x_test))
    n_train = len(job.x_train)
    setting = (
        f"Students: {n_train} training images, {budget} labelled. CE only learns from the "
        f"{budget} labelled images; the distillation methods also learn from the teacher's "
        f"outputs on the other {n_train - budget}."
        if budget is not None
        else f"Students: all {n_train} labelled training images."
    ) + _setting_of_teachers_and_generations(job)
    print("\n" + table + "\n\n" + setting + "\n" + verdict)
    summary = {
        "backend": backend,
        "data": job.name,
        "teacher_accuracy": teacher_accuracy,
        "teacher_accuracies": scores["accuracies"],
        "teachers": scores["names"],
        "teacher_sources": scores["sources"],
        "ensemble": job.ensemble if several else None,
        "chain": job.chain,
        "generations": len(job.generations),
        "results": results,
        "best": best["method"],
        "best_generation": best["generation"],
        "best_seed": best["best_seed"],
        "epochs": job.epochs,
        "seed": args.seed,
        "seeds": job.seeds,
        "labels": budget,
        "temperature": args.temperature,
        "label_noise": args.label_noise,
        "test_samples": len(job.x_test),
        "seconds": time.perf_counter() - started,
    }
    usage = _usage(out / "student.keras", backend, job.input_shape)
    (out / "results.json").write_text(json.dumps(summary, indent=2))
    (out / "results.md").write_text(
        table + "\n\n" + setting + "\n" + verdict + "\n\n" + _usage_markdown(usage) + "\n"
    )
    teachers = len(scores["accuracies"])
    plot = _plot(results, teacher_accuracy, job.seeds, out / "results.png", teachers)
    print(
        f"\nbest (highest mean): {best['label']} -> {out / 'student.keras'}"
        f" (its best seed: {best['best_seed']}, {100 * best['best_seed_accuracy']:.1f} %)"
        + (f" | plot: {plot}" if plot else "")
        + f" | total {summary['seconds']:.0f} s"
    )
    print("\n" + "\n".join(usage))


def _usage(path, backend, input_shape):
    """How to use the kept student in plain Keras: the lines printed after
    a run (results.md holds them too)."""
    shape = ", ".join(str(size) for size in (None, *input_shape))
    return [
        f"To use {path} in plain Keras: it was trained with KERAS_BACKEND={backend} (set it "
        "before importing Keras); it outputs logits (keras.ops.softmax gives probabilities); "
        "it is saved without optimizer or compile state (compile it to train it further):",
        "",
        "    import keras",
        f'    student = keras.saving.load_model("{path}")',
        f"    probabilities = keras.ops.softmax(student.predict(x))  # x: shape ({shape})",
    ]


def _usage_markdown(usage):
    """`_usage` for results.md: the code as a fenced block."""
    text, _, code = "\n".join(usage).partition("\n\n")
    lines = [line[4:] for line in code.split("\n")]
    return text + "\n\n```python\n" + "\n".join(lines) + "\n```"


_ENSEMBLE_WORDS = {
    "mean_probs": "the students distil the mean of their softened distributions",
    "mean_logits": "the students distil the mean of their logits",
    "per_teacher": "the students distil each teacher, the losses averaged",
}


def _setting_of_teachers_and_generations(job):
    """What the rows mean with several teachers, a chain or generations."""
    words = ""
    if job.teachers > 1:
        words += (
            f" Teachers: {job.teachers}, combined with --ensemble {job.ensemble} ("
            + _ENSEMBLE_WORDS[job.ensemble]
            + "); the teachers' ensemble row and the plot's teacher line are the mean of "
            "their softmaxes."
        )
    if job.chain is not None:
        words += (
            " Chain: teacher -> "
            + " -> ".join(f"MLP {width}" for width in job.chain)
            + ": per method and seed, generation 1 is distilled from the teacher and each "
            "later one from the previous generation; CE only has the last generation's "
            "architecture, the one compared with it."
        )
    elif len(job.generations) > 1:
        words += (
            f" Generations: {len(job.generations)} of the same student (born-again): per "
            "method and seed, generation 1 is distilled from the teacher and each later one "
            "from the previous generation, from the same initialisation."
        )
    return words


def _logits(model, x):
    return np.asarray(model.predict(x, batch_size=min(len(x), 2048), verbose=0))  # one shape


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(_logits(model, x), axis=-1) == y))


def _compare_with_ce(results):
    """Adds each method's paired difference with CE only (same seeds, same
    labelled subsets): its mean, its std over the seeds, its 95 % t-interval
    and whether that interval excludes 0 (`beyond_noise`; with one seed,
    None): `keras_cskd.statistics.paired_difference`."""
    baseline = results[0]["accuracies"]
    for row in results[1:]:
        row["difference"] = row["difference_std"] = None
        row["difference_interval"] = row["beyond_noise"] = None
        if not row.get("compared", True):  # another architecture (a chain's assistant)
            continue
        paired = paired_difference(row["accuracies"], baseline)
        row["difference"], row["difference_std"] = paired["mean"], paired["std"]
        if paired["n"] > 1:
            row["difference_interval"] = [paired["low"], paired["high"]]
        row["beyond_noise"] = paired["beyond_noise"]


def _copy_best(best, out):
    import shutil

    shutil.copyfile(best["student"], out / "student.keras")


def _table(results, scores, seeds):
    accuracy_title = f"test accuracy (mean ± std, {seeds} seeds)" if seeds > 1 else "test accuracy"
    lines = [
        f"| method | {accuracy_title} | vs CE only (paired, 95 % CI) | beyond seed noise "
        "| train time (s) |",
        "|---|---:|---:|:---:|---:|",
    ]
    teachers = scores["accuracies"]
    if len(teachers) == 1:
        lines.append(f"| teacher | {100 * teachers[0]:.1f} % | | | |")
    else:
        lines += [
            f"| teacher {k + 1}: {name} | {100 * a:.1f} % | | | |"
            for k, (name, a) in enumerate(zip(scores["names"], teachers))
        ]
        ensemble = f"{100 * scores['ensemble']:.1f} %"
        lines.append(f"| teachers' ensemble (mean of softmaxes) | {ensemble} | | | |")
    for row in results:
        accuracy = f"{100 * row['accuracy']:.1f}"
        accuracy += f" ± {100 * row['std']:.1f} %" if row["std"] is not None else " %"
        if row["method"] == "ce":
            delta, noise = "", ""
        elif not row.get("compared", True):
            delta, noise = "(another architecture)", ""
        else:
            delta = f"{100 * row['difference']:+.1f}"
            if row["difference_interval"] is not None:
                low, high = (100 * bound for bound in row["difference_interval"])
                delta += f" [{low:+.1f}, {high:+.1f}]"
            delta += " pt"
            noise = {True: "yes", False: "no", None: "?"}[row["beyond_noise"]]
        lines.append(f"| {_label(row)} | {accuracy} | {delta} | {noise} | {row['seconds']:.1f} |")
    return "\n".join(lines)


def _label(row):
    return row.get("label") or METHOD_LABELS[row["method"]]


def _verdict(results, seeds, test_samples):
    """The table's conclusion in words."""
    others = [r for r in results[1:] if r.get("compared", True)]
    if not others:
        return "Only CE was run."
    if seeds < 2:
        return (
            f"One seed: the table cannot tell a method from noise (one test sample is "
            f"{100 / test_samples:.2f} pt); run --seeds 3 or more."
        )
    better = [_label(r) for r in others if r["beyond_noise"] and r["difference"] > 0]
    worse = [_label(r) for r in others if r["beyond_noise"] and r["difference"] < 0]
    unclear = [_label(r) for r in others if not r["beyond_noise"]]
    words = []
    if better:
        words.append(f"Better than CE only beyond seed noise: {', '.join(better)}.")
    else:
        words.append("No method beats CE only beyond seed noise.")
    if worse:
        words.append(f"Worse than CE only beyond seed noise: {', '.join(worse)}.")
    if unclear:
        words.append(f"Within seed noise of CE only: {', '.join(unclear)}.")
    words.append(
        f"(Seed noise: a paired difference counts when its 95 % t-interval over the "
        f"{seeds} seeds excludes 0; one test sample is {100 / test_samples:.2f} pt.)"
    )
    return " ".join(words)


def _plot(results, teacher_accuracy, seeds, path, teachers=1):
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(matplotlib is not installed: no plot; pip install matplotlib)")
        return None
    figure = _figure(results, teacher_accuracy, seeds, teachers)
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return str(path)


def _figure(results, teacher_accuracy, seeds, teachers=1):
    """Accuracies (mean ± std, dots = seeds, the teacher's line) on a 0-100
    axis, and the paired differences with CE only."""
    import matplotlib.pyplot as plt

    names = [_label(r) for r in results]
    positions = np.arange(len(results))
    figure, (bars, deltas) = plt.subplots(
        1, 2, figsize=(11, 0.5 * len(results) + 2.2), constrained_layout=True
    )
    means = [100 * r["accuracy"] for r in results]
    errors = [100 * (r["std"] or 0.0) for r in results]
    bars.barh(
        positions, means, xerr=errors, capsize=4, color=["grey"] + ["tab:blue"] * (len(results) - 1)
    )
    for position, row in zip(positions, results):
        bars.plot(
            [100 * a for a in row["accuracies"]],
            [position] * len(row["accuracies"]),
            "k.",
            markersize=4,
        )
    bars.axvline(
        100 * teacher_accuracy,
        color="black",
        linestyle="--",
        label=("teacher" if teachers == 1 else f"ensemble of {teachers} teachers")
        + f" ({100 * teacher_accuracy:.1f} %)",
    )
    bars.set_xlim(0, 100)
    bars.set_yticks(positions, names)
    bars.invert_yaxis()
    bars.set_xlabel(f"test accuracy (%): mean ± std over {seeds} seed(s), dots = seeds")
    bars.legend(loc="lower left", fontsize=8)
    bars.set_title("students")
    compared = [(p, r) for p, r in zip(positions, results) if p and r.get("compared", True)]
    others = [r for _, r in compared]
    if others:
        deltas.barh(
            [p for p, _ in compared],
            [100 * r["difference"] for r in others],
            xerr=[
                100 * (r["difference_interval"][1] - r["difference"])
                if r["difference_interval"]
                else 0.0
                for r in others
            ],
            capsize=4,
            color=["tab:green" if r["beyond_noise"] else "lightgrey" for r in others],
        )
        deltas.axvline(0, color="grey", linewidth=1, label="CE only")
        deltas.set_yticks(positions, names)
        deltas.invert_yaxis()
        deltas.set_xlabel("paired difference with CE only (pt), mean and 95 % interval")
        deltas.set_title("green: beyond seed noise")
        deltas.legend(loc="lower right", fontsize=8)
    return figure

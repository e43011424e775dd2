"""Several teachers and chains against one teacher, from the command line's
result files: the main job (digits, 50 labels, 5 seeds) run four ways,

    keras-cskd distill --out OUT/one-teacher
    keras-cskd distill --out OUT/ensemble-3 --teachers 3
    keras-cskd distill --out OUT/chain-96-32 --chain 96,32
    keras-cskd distill --out OUT/born-again-2 --generations 2

and compared per method with the one-teacher student of the same seed (the
same initialisation and labelled subset): the mean paired difference with
its 95 % t-interval. Prints a Markdown table (docs/results.md quotes it).

    python benchmarks/teachers_table.py benchmarks/results/teachers-digits
"""

import json
import sys
from pathlib import Path

from keras_cskd.statistics import paired_difference

RUNS = (
    ("ensemble-3", "ensemble of 3 teachers (mean_probs)"),
    ("chain-96-32", "teacher -> MLP 96 -> student"),
    ("born-again-2", "two born-again generations"),
)


def last_generation(summary, method):
    rows = [r for r in summary["results"] if r["method"] == method]
    return max(rows, key=lambda r: r.get("generation", 1))


def paired(a, b):
    """The mean paired difference of a and b (fractions, same seed order)
    and its 95 % t-interval, in points (`keras_cskd.statistics`)."""
    d = paired_difference(a, b)
    return 100 * d["mean"], 100 * d["low"], 100 * d["high"]


def main(folder):
    folder = Path(folder)
    base = json.loads((folder / "one-teacher.json").read_text())
    methods = [r["method"] for r in base["results"] if r["method"] != "ce"]
    print("| method | one teacher | " + " | ".join(label for _, label in RUNS) + " |")
    print("|---|---:|" + "---:|" * len(RUNS))
    for method in methods:
        reference = last_generation(base, method)
        cells = [f"{100 * reference['accuracy']:.1f} %"]
        for name, _ in RUNS:
            path = folder / f"{name}.json"
            if not path.exists():
                cells.append("not run")
                continue
            summary = json.loads(path.read_text())
            if not any(r["method"] == method for r in summary["results"]):
                cells.append("n/a")  # e.g. logit MSE: mean_probs has no logits to match
                continue
            row = last_generation(summary, method)
            mean, low, high = paired(row["accuracies"], reference["accuracies"])
            bold = "**" if low > 0 or high < 0 else ""
            cells.append(
                f"{100 * row['accuracy']:.1f} % ({bold}{mean:+.1f} [{low:+.1f}, {high:+.1f}]{bold})"
            )
        print(f"| {reference['label']} | " + " | ".join(cells) + " |")
    teachers = json.loads((folder / "ensemble-3.json").read_text())
    print(
        f"\nTeachers: one {100 * base['teacher_accuracy']:.1f} %; the three of the ensemble "
        + ", ".join(f"{100 * a:.1f} %" for a in teachers["teacher_accuracies"])
        + f", their ensemble {100 * teachers['teacher_accuracy']:.1f} %."
    )


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "benchmarks/results/teachers-digits")

#!/usr/bin/env python
"""One Markdown table from several `step_time.py --json` reports.

Each report (one backend and precision, the PyTorch peer measured in the same
process) becomes a column: ms/step of every configuration, then the ratios.

Example:

    python benchmarks/perf_table.py out/step_time_*.json > out/table.md
"""

import json
import sys


def column_name(report):
    policy = report["policy"].replace("mixed_", "")
    return f"{report['backend']} {'fp32' if policy == 'float32' else policy}"


def table(reports):
    """Markdown lines: rows are configurations and ratios, columns the reports."""
    names = [column_name(report) for report in reports]
    lines = ["| ms/step | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    labels = {}
    for report in reports:
        labels.update(report["labels"])
    for key, label in labels.items():
        cells = [report["ms_per_step"].get(key) for report in reports]
        lines.append(f"| {label} | " + " | ".join(_cell(v, "{:.2f}") for v in cells) + " |")
    ratio_names = []
    for report in reports:
        ratio_names += [name for name in report["ratios"] if name not in ratio_names]
    lines += ["", "| ratio | " + " | ".join(names) + " |", "|---" * (len(names) + 1) + "|"]
    for name in ratio_names:
        cells = [report["ratios"].get(name) for report in reports]
        lines.append(f"| {name} | " + " | ".join(_cell(v, "{:.3f}") for v in cells) + " |")
    return lines


def _cell(value, fmt):
    return "-" if value is None else fmt.format(value)


def main(argv=None):
    paths = sys.argv[1:] if argv is None else argv
    if not paths:
        raise SystemExit("usage: perf_table.py REPORT.json [REPORT.json ...]")
    reports = []
    for path in paths:
        with open(path) as f:
            reports.append(json.load(f))
    first = reports[0]
    print(
        f"pair {first['pair']}, batch {first['batch_size']}, clock {first['clock']}; "
        f"{first['hardware'][-1]}"
    )
    print()
    print("\n".join(table(reports)))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Render a benchmark's JSON rows as a Markdown table (pasted into bench/RESULTS.md).

python bench/report.py bench/results/foundation.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

COLUMNS = [
    ("dataset", "dataset", "{}"),
    ("strategy", "system", "{}"),
    ("seed", "seed", "{}"),
    ("precision", "precision", "{}"),
    ("train_rows", "train rows", "{:,}"),
    ("epochs", "epochs", "{:g}"),
    ("accuracy", "val acc %", "{:.2%}"),
    ("macro_f1", "val macro-F1 %", "{:.2%}"),
    ("test_accuracy", "test acc %", "{:.2%}"),
    ("samples_per_s", "train samples/s", "{:.1f}"),
    ("train_runtime_s", "train s", "{:.0f}"),
    ("peak_rss_mb", "peak RSS MB", "{:,.0f}"),
    ("trainable_pct", "trainable %", "{:.3g}"),
    ("artifact_mb", "artifact MB", "{:.1f}"),
]


def cell(row: dict, key: str, fmt: str) -> str:
    value = row.get(key)
    if value is None:
        return "-"
    return fmt.format(value).replace("%", "") if fmt.endswith("%}") else fmt.format(value)


def main() -> None:
    rows = json.loads(Path(sys.argv[1]).read_text())
    print("| " + " | ".join(title for _, title, _ in COLUMNS) + " |")
    print("|" + "---|" * len(COLUMNS))
    for row in rows:
        if "error" in row:
            print(f"| {row['dataset']} | {row['strategy']} | error: {row['error']} |")
            continue
        print("| " + " | ".join(cell(row, key, fmt) for key, _, fmt in COLUMNS) + " |")


if __name__ == "__main__":
    main()

"""Collect eval.py results into the tables of results/results.md.

    python report.py results          # reads results/<dataset>/<model>.json

Writes results/results.json ({dataset: {model: metrics}}) and
results/results.md: one table per metric, datasets as rows, models as
columns, values in percent with two decimals. A missing cell shows as "-".
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

METRICS = ("recall@1", "recall@5", "recall@20", "mrr@20", "ndcg@20")
# column order of the five models when present; anything else follows by name
MODEL_ORDER = ("base-512", "copy", "interpolate", "origin_train", "efficient_train")


def collect(results_dir: Path) -> dict[str, dict[str, dict]]:
    """{dataset: {model: result}} from results_dir/<dataset>/<model>.json."""
    table: dict[str, dict[str, dict]] = {}
    for path in sorted(results_dir.glob("*/*.json")):
        table.setdefault(path.parent.name, {})[path.stem] = json.loads(path.read_text())
    return table


def _model_key(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(MODEL_ORDER):
        if name.startswith(prefix):
            return i, name
    return len(MODEL_ORDER), name


def markdown(table: dict[str, dict[str, dict]], metrics: tuple[str, ...] = METRICS) -> str:
    """One markdown table per metric: datasets as rows, models as columns, percent."""
    models = sorted({m for cells in table.values() for m in cells}, key=_model_key)
    sections = []
    for metric in metrics:
        lines = [f"### {metric}", "", "| dataset | " + " | ".join(models) + " |"]
        lines.append("|---|" + "---:|" * len(models))
        for dataset, cells in table.items():
            values = [_percent(cells.get(m, {}).get(metric)) for m in models]
            lines.append(f"| {dataset} | " + " | ".join(values) + " |")
        sections.append("\n".join(lines))
    queries = {d: next(iter(c.values()))["num_queries"] for d, c in table.items() if c}
    note = ", ".join(f"{d}: {n} queries" for d, n in queries.items())
    return "\n\n".join(sections) + f"\n\nValues in percent. {note}.\n"


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description="Write results.md and results.json.")
    parser.add_argument("results_dir", nargs="?", default="results")
    args = parser.parse_args(argv)
    results_dir = Path(args.results_dir)
    table = collect(results_dir)
    if not table:
        raise SystemExit(f"no results under {results_dir}/<dataset>/<model>.json")
    text = markdown(table)
    write_atomically(results_dir / "results.json", json.dumps(table, indent=2) + "\n")
    write_atomically(results_dir / "results.md", text)
    print(text)
    return text


if __name__ == "__main__":
    main()

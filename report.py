"""Collect eval.py results into the tables of results/results.md and one plot.

    python report.py results          # reads results/<dataset>/<model>.json

Writes results/results.json ({dataset: {model: result}}) and results/results.md:
the datasets (documents, queries, document lengths in tokens), one table per
metric (datasets as rows, models as columns, values in percent with two
decimals), what each model costs (seconds to encode or index, vectors per
document), and nDCG@20 by the length bucket of each query's relevant document.
Results under results/full-body/<dataset>/ (the full-body RFC variant) follow
as a second set of metric tables. A missing cell shows as "-". The bucket
breakdown is also drawn in results/ndcg_by_length.png when matplotlib is
installed.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

METRICS = ("recall@1", "recall@5", "recall@20", "mrr@20", "ndcg@20")
# column order of the models when present; anything else follows by name
MODEL_ORDER = (
    "bm25",
    "base-512",
    "maxsim",
    "copy",
    "interpolate",
    "origin_train",
    "efficient_train",
)
BUCKETS = ("<=512", "513-2048", "2049-8192", ">8192")
BUCKET_KEY = "ndcg@20_by_length"
SECOND_TABLE = "full-body"
Table = dict[str, dict[str, dict]]


def collect(results_dir: Path) -> Table:
    """{dataset: {model: result}} from results_dir/<dataset>/<model>.json.

    A subdirectory with a results.json of its own is another report's root
    (results/default-run), not a dataset, and is left to that report.
    """
    table: Table = {}
    for path in sorted(results_dir.glob("*/*.json")):
        if not (path.parent / "results.json").is_file():
            table.setdefault(path.parent.name, {})[path.stem] = json.loads(path.read_text())
    return table


def _model_key(name: str) -> tuple[int, str]:
    for i, prefix in enumerate(MODEL_ORDER):
        if name.startswith(prefix):
            return i, name
    return len(MODEL_ORDER), name


def models_of(table: Table) -> list[str]:
    return sorted({m for cells in table.values() for m in cells}, key=_model_key)


def _grid(title: str, rows: list[str], columns: list[str], cell, corner: str = "dataset") -> str:
    """A markdown table: `cell(row, column)` gives each value as text."""
    lines = [f"### {title}", "", f"| {corner} | {' | '.join(columns)} |"]
    lines.append("|---|" + "---:|" * len(columns))
    lines += [f"| {row} | " + " | ".join(cell(row, c) for c in columns) + " |" for row in rows]
    return "\n".join(lines)


def metric_tables(table: Table, metrics: tuple[str, ...] = METRICS) -> list[str]:
    """One table per metric: datasets as rows, models as columns, percent."""
    models = models_of(table)

    def one(metric: str) -> str:
        return _grid(
            metric, list(table), models, lambda d, m: _percent(table[d].get(m, {}).get(metric))
        )

    return [one(metric) for metric in metrics]


def dataset_table(table: Table) -> str:
    """Documents, queries and document lengths, from any result of each dataset."""
    fields = {
        "documents": "documents",
        "queries": "num_queries",
        "median tokens": "doc_tokens_median",
        "p90 tokens": "doc_tokens_p90",
    }
    first = {d: next(iter(cells.values())) for d, cells in table.items()}
    return _grid(
        "datasets", list(table), list(fields), lambda d, f: str(first[d].get(fields[f], "-"))
    )


def cost_tables(table: Table) -> list[str]:
    models = models_of(table)

    def value(key: str):
        return lambda d, m: str(table[d].get(m, {}).get(key, "-"))

    return [
        _grid("seconds to encode (bm25: to index)", list(table), models, value("seconds")),
        _grid("vectors per document", list(table), models, value("vectors_per_document")),
    ]


def bucket_tables(table: Table) -> list[str]:
    """Per dataset: models as rows, length buckets as columns, nDCG@20 in percent."""
    sections = []
    for dataset, cells in table.items():
        models = [m for m in models_of(table) if cells.get(m, {}).get(BUCKET_KEY)]
        if not models:
            continue
        buckets = _buckets(cells[models[0]])
        counts = {b: cells[models[0]][BUCKET_KEY][b]["queries"] for b in buckets}
        columns = [f"{b} ({counts[b]} q)" for b in buckets]

        def cell(model, column, cells=cells, buckets=buckets, columns=columns):
            bucket = buckets[columns.index(column)]
            return _percent(cells[model][BUCKET_KEY].get(bucket, {}).get("ndcg@20"))

        title = f"{dataset}: ndcg@20 by length of the relevant document (tokens)"
        sections.append(_grid(title, models, columns, cell, corner="model"))
    return sections


def _buckets(result: dict) -> list[str]:
    return [b for b in BUCKETS if b in result[BUCKET_KEY]]


def markdown(table: Table, second: Table | None = None) -> str:
    parts = [dataset_table(table), *metric_tables(table), *cost_tables(table)]
    parts += bucket_tables(table)
    if second:
        parts.append(f"## {SECOND_TABLE}: RFCs with their introduction kept")
        parts += [dataset_table(second), *metric_tables(second), *bucket_tables(second)]
    return "\n\n".join(parts) + "\n\nValues in percent; q: queries in the bucket.\n"


def plot(table: Table, path: Path) -> bool:
    """Bars of nDCG@20 per length bucket and model, a panel per dataset; False if no matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return False
    datasets = [d for d, cells in table.items() if any(r.get(BUCKET_KEY) for r in cells.values())]
    if not datasets:
        return False
    fig, axes = plt.subplots(1, len(datasets), figsize=(5 * len(datasets), 4), squeeze=False)
    for ax, dataset in zip(axes[0], datasets, strict=True):
        cells = table[dataset]
        models = [m for m in models_of(table) if cells.get(m, {}).get(BUCKET_KEY)]
        buckets = _buckets(cells[models[0]])
        width = 0.8 / len(models)
        for i, model in enumerate(models):
            values = [100 * cells[model][BUCKET_KEY].get(b, {}).get("ndcg@20", 0) for b in buckets]
            ax.bar([x + i * width for x in range(len(buckets))], values, width, label=model)
        counts = [cells[models[0]][BUCKET_KEY][b]["queries"] for b in buckets]
        labels = [f"{b}\n({n} q)" for b, n in zip(buckets, counts, strict=True)]
        ax.set_xticks([x + 0.4 - width / 2 for x in range(len(buckets))], labels)
        ax.set_title(dataset)
        ax.set_xlabel("relevant document length (tokens)")
        ax.set_ylabel("nDCG@20 (%)")
    handles, names = axes[0][0].get_legend_handles_labels()
    fig.legend(handles, names, loc="lower center", ncol=len(names), fontsize="small")
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def _percent(value) -> str:
    return "-" if value is None else f"{100 * value:.2f}"


def write_atomically(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def main(argv: list[str] | None = None) -> str:
    parser = argparse.ArgumentParser(description="Write results.md, results.json and a plot.")
    parser.add_argument("results_dir", nargs="?", default="results")
    args = parser.parse_args(argv)
    results_dir = Path(args.results_dir)
    table = collect(results_dir)
    if not table:
        raise SystemExit(f"no results under {results_dir}/<dataset>/<model>.json")
    second = collect(results_dir / SECOND_TABLE)
    text = markdown(table, second)
    write_atomically(results_dir / "results.json", json.dumps(table | second, indent=2) + "\n")
    write_atomically(results_dir / "results.md", text)
    if plot(table, results_dir / "ndcg_by_length.png"):
        text += f"\nplot: {results_dir / 'ndcg_by_length.png'}\n"
    print(text)
    return text


if __name__ == "__main__":
    main()

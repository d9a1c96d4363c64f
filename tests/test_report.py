"""The results table writer on fixed results."""

from __future__ import annotations

import json

import report


def write(root, dataset, model, **values):
    path = root / dataset / f"{model}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"num_queries": 3, **values}))


def test_tables_have_datasets_as_rows_models_as_columns(tmp_path):
    write(tmp_path, "rfc", "efficient_train", **{"mrr@20": 0.5, "ndcg@20": 0.123456})
    write(tmp_path, "rfc", "base-512", **{"mrr@20": 1 / 3, "ndcg@20": 0.0})
    write(tmp_path, "man", "base-512", **{"mrr@20": 1.0})

    text = report.main([str(tmp_path)])

    mrr = text.split("### mrr@20")[1].split("###")[0]
    assert "| dataset | base-512 | efficient_train |" in mrr
    assert "| man | 100.00 | - |" in mrr
    assert "| rfc | 33.33 | 50.00 |" in mrr
    ndcg = text.split("### ndcg@20")[1]
    assert "| rfc | 0.00 | 12.35 |" in ndcg
    assert "| man | - | - |" in ndcg
    saved = json.loads((tmp_path / "results.json").read_text())
    assert saved["rfc"]["efficient_train"]["mrr@20"] == 0.5
    assert (tmp_path / "results.md").read_text() == text


def test_datasets_costs_length_buckets_second_table_and_plot(tmp_path):
    buckets = {
        "<=512": {"ndcg@20": 0.5, "queries": 2},
        "2049-8192": {"ndcg@20": 0.25, "queries": 1},
    }
    common = {"documents": 9, "doc_tokens_median": 700, "doc_tokens_p90": 4000}
    write(tmp_path, "kernel", "bm25", seconds=1.5, vectors_per_document=0.0, **common)
    write(
        tmp_path, "kernel", "maxsim-1024", seconds=20.0, vectors_per_document=1.75,
        **common, **{"ndcg@20_by_length": buckets, "ndcg@20": 0.4},
    )  # fmt: skip
    write(tmp_path / "full-body", "rfc-full", "base-512", **{"ndcg@20": 0.9})
    write(tmp_path, "judged-zero", "bm25", **{"ndcg@20_by_length": {}})  # no relevant document
    write(tmp_path / "default-run", "rfc", "base-512", **{"ndcg@20": 0.5})
    report.main([str(tmp_path / "default-run")])  # a report of its own inside this one

    text = report.main([str(tmp_path)])

    assert "| kernel | 9 | 3 | 700 | 4000 |" in text  # documents, queries, median, p90
    assert "| kernel | 1.5 | 20.0 |" in text.split("### seconds")[1]
    assert "| kernel | 0.0 | 1.75 |" in text.split("### vectors per document")[1]
    by_length = text.split("### kernel: ndcg@20 by length")[1]
    assert "| model | <=512 (2 q) | 2049-8192 (1 q) |" in by_length  # empty buckets left out
    assert "| maxsim-1024 | 50.00 | 25.00 |" in by_length
    assert "bm25 |" not in by_length.split("##")[0]  # bm25 has no breakdown: no row
    full = text.split("## full-body")[1]
    assert "| rfc-full | 90.00 |" in full.split("### ndcg@20")[1]
    assert "rfc-full" not in text.split("## full-body")[0]
    assert "judged-zero: ndcg@20 by length" not in text  # no empty table
    saved = json.loads((tmp_path / "results.json").read_text())
    assert set(saved) == {"judged-zero", "kernel", "rfc-full"}
    png = tmp_path / "ndcg_by_length.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

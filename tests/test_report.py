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

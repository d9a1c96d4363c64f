"""Each top-level script run end to end through main(argv) on small synthetic data."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import AutoModel

import efficient_train
import eval as eval_script
import origin_train
from model import load_encoder
from tests.conftest import TOPICS


def train_args(model_dir, train_file, output_dir, *extra):
    return [
        "--model_name_or_path", str(model_dir),
        "--train_file", str(train_file),
        "--output_dir", str(output_dir),
        "--max_length", "128",
        "--query_max_length", "16",
        "--per_device_train_batch_size", "4",
        "--max_steps", "3",
        "--learning_rate", "1e-3",
        *extra,
    ]  # fmt: skip


@pytest.mark.parametrize("script", ["origin", "efficient"])
def test_trainer_writes_model_args_and_log(script, tiny_model_dir, train_file, tmp_path):
    out = tmp_path / script
    if script == "origin":
        origin_train.main(train_args(tiny_model_dir, train_file, out))
        batch = "**Batch**: 4 per device, gradient accumulation 1"
    else:
        chunking = ["--mini_batch_size", "3", "--mini_batch_tokens", "200"]
        efficient_train.main(train_args(tiny_model_dir, train_file, out, *chunking))
        batch = "per device, mini batch 3 of at most 200 tokens (grouped by length), gradient"
    assert batch in (out / "README.md").read_text()

    model = AutoModel.from_pretrained(out)
    assert model.config.max_position_embeddings == 128  # extended from 64
    args = json.loads((out / "training_args.json").read_text())
    assert args["per_device_train_batch_size"] == 4 and args["max_length"] == 128
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in log] == [1, 2, 3]
    for record in log:
        assert record["loss"] > 0 and record["samples_per_s"] > 0 and record["peak_mem_mb"] > 0
    # the weights moved
    before = AutoModel.from_pretrained(tiny_model_dir).encoder.layer[0].output.dense.weight
    assert not torch.equal(before, model.encoder.layer[0].output.dense.weight)


def test_both_trainers_reach_the_same_weights(tiny_model_dir, train_file, tmp_path):
    # the tiny model has no dropout, so GradCache must give the plain update step after step
    origin_train.main(train_args(tiny_model_dir, train_file, tmp_path / "a", "--optim", "sgd"))
    efficient_train.main(
        train_args(
            tiny_model_dir, train_file, tmp_path / "b", "--optim", "sgd", "--mini_batch_size", "3"
        )
    )
    a = AutoModel.from_pretrained(tmp_path / "a").state_dict()
    b = AutoModel.from_pretrained(tmp_path / "b").state_dict()
    for name in a:
        torch.testing.assert_close(b[name], a[name], atol=1e-5, rtol=1e-5, msg=name)


@pytest.mark.parametrize(
    "flag, value, message",
    [
        ("--per_device_train_batch_size", "1", "at least 2"),
        ("--mini_batch_size", "0", "mini_batch_size must be at least 1"),
        ("--optim", "adam", "optim must be one of"),
        ("--max_steps", "0", "max_steps must be positive"),
        ("--query_max_length", "2048", "exceeds --max_length 1024"),
    ],
)
def test_bad_arguments_fail_before_any_work(flag, value, message, tmp_path):
    with pytest.raises(ValueError, match=message):
        efficient_train.main(["--output_dir", str(tmp_path), flag, value])
    assert not any(tmp_path.iterdir())


def write_beir(root):
    (root / "qrels").mkdir(parents=True)
    corpus = [{"_id": f"d{i}", "title": "", "text": d} for i, (_, d) in enumerate(TOPICS)]
    queries = [{"_id": f"q{i}", "text": q} for i, (q, _) in enumerate(TOPICS)]
    (root / "corpus.jsonl").write_text("\n".join(map(json.dumps, corpus)))
    (root / "queries.jsonl").write_text("\n".join(map(json.dumps, queries)))
    rows = "".join(f"q{i}\td{i}\t1\n" for i in range(len(TOPICS)))
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + rows)
    return root


def test_eval_writes_run_and_metrics_then_rescores_the_run(tiny_model_dir, tmp_path):
    beir = write_beir(tmp_path / "beir")
    run_file, out = tmp_path / "run.trec", tmp_path / "metrics.json"
    result = eval_script.main(
        ["--model_name_or_path", str(tiny_model_dir), "--data_dir", str(beir),
         "--max_length", "96", "--run_file", str(run_file), "--output_file", str(out)]
    )  # fmt: skip
    assert result["num_queries"] == 8 and result["documents"] == 8 and result["max_length"] == 96
    assert json.loads(out.read_text()) == result
    for name in ("recall@1", "recall@5", "recall@20", "mrr@20", "ndcg@20"):
        assert 0 <= result[name] <= 1
    assert result["recall@20"] == 1.0  # 8 documents: every positive is in the top 20
    lines = run_file.read_text().splitlines()
    assert len(lines) == 64 and lines[0].split()[1] == "Q0"

    rescored = eval_script.main(["--run", str(run_file), "--qrels", str(beir / "qrels/test.tsv")])
    for name in ("recall@1", "recall@5", "mrr@20", "ndcg@20"):
        assert rescored[name] == pytest.approx(result[name], abs=1e-12)


@pytest.mark.slow
def test_real_model_smoke(train_file, tmp_path):
    """The real default model: ranks natural pairs far above chance, trains, reloads."""
    beir = write_beir(tmp_path / "beir")
    base = eval_script.main(["--data_dir", str(beir), "--run_file", str(tmp_path / "r.trec")])
    assert base["mrr@20"] > 0.9  # chance is about 0.34 for 8 documents

    out = tmp_path / "trained"
    efficient_train.main(
        ["--train_file", str(train_file), "--output_dir", str(out), "--max_length", "640",
         "--per_device_train_batch_size", "8", "--mini_batch_size", "3", "--max_steps", "1"]
    )  # fmt: skip
    encoder, _ = load_encoder(str(out), 640)
    assert encoder.backbone.config.max_position_embeddings == 640
    trained = eval_script.main(
        ["--model_name_or_path", str(out), "--data_dir", str(beir),
         "--run_file", str(tmp_path / "t.trec")]
    )  # fmt: skip
    assert trained["max_length"] == 640 and trained["mrr@20"] > 0.9

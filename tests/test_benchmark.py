"""benchmark.py: token accounting on hand-built batches, and one small run end to end."""

from __future__ import annotations

import importlib.util
import json

import pytest
import torch

import benchmark
from benchmark import BenchmarkArguments, forward_tokens
from data import Batch


def batch_of(query_lengths: list[int], doc_lengths: list[int]) -> Batch:
    def texts(lengths):
        return [[101] * n for n in lengths]

    n = len(query_lengths)
    no_false_negatives = torch.zeros(n, len(doc_lengths), dtype=torch.bool)
    return Batch(texts(query_lengths), texts(doc_lengths), no_false_negatives, [])


def test_forward_tokens_counts_padding_and_passes():
    batch = batch_of([2, 8, 2, 8], [5, 5, 5, 5])
    args = BenchmarkArguments(mini_batch_size=2)
    real = 20 + 20
    # origin: one pass, each side padded to its longest
    assert forward_tokens("origin", batch, args) == (real, 4 * 8 + 4 * 5)
    # st: two passes of chunks in batch order, each trimmed to its longest
    assert forward_tokens("st", batch, args) == (2 * real, 2 * (16 + 16) + 2 * 20)
    # efficient: grouped by length, queries pad to [8, 8] + [2, 2]
    assert forward_tokens("efficient", batch, args) == (2 * real, 2 * (16 + 4) + 2 * 20)
    # a side in one chunk is forwarded once
    whole = BenchmarkArguments(mini_batch_size=4)
    assert forward_tokens("efficient", batch, whole) == (real, 4 * 8 + 4 * 5)


def test_quick_and_long_presets_yield_to_explicit_values():
    quick = BenchmarkArguments(quick=True, max_length=64)
    assert (quick.max_length, quick.query_max_length, quick.batch_sizes) == (64, 32, "8,16,32")
    assert quick.sizes("efficient") == [8, 16, 32, 64] and quick.sizes("origin") == [8, 16, 32]
    long = BenchmarkArguments(long=True)
    assert (long.max_length, long.method_list, long.sizes("efficient")) == (
        8192,
        ["efficient"],
        [32],
    )
    assert (long.warmup_steps, long.steps) == (0, 1)
    assert (long.mini_batch_size, long.mini_batch_tokens) == (32, 2 * 8192)


def test_synthetic_batches_when_there_is_no_dataset(monkeypatch, tokenizer):
    monkeypatch.setattr(benchmark, "default_train_file", lambda: None)
    args = BenchmarkArguments(max_length=512, query_max_length=64, batch_sizes="4,8")
    args.efficient_batch_sizes = ""
    pairs, note = benchmark.load_pairs(args, tokenizer)
    assert "SYNTHETIC" in note
    assert len(pairs) == 8 * (args.warmup_steps + args.steps)
    assert max(len(p.positive) for p in pairs) <= 512 and max(len(p.query) for p in pairs) <= 64
    assert len({len(p.positive) for p in pairs}) > 1  # lengths vary, so padding is realistic


@pytest.fixture
def train_file(tmp_path):
    path = tmp_path / "train.jsonl"
    rows = [
        {"query": f"question {i} about topic {i}", "positive": f"topic {i} is " + "long " * i}
        for i in range(1, 11)
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path


def test_benchmark_end_to_end(tiny_model_dir, train_file, tmp_path):
    out = tmp_path / "results"
    report_md = benchmark.main(
        [
            "--model_name_or_path", str(tiny_model_dir),
            "--train_file", str(train_file),
            "--output_dir", str(out),
            "--max_length", "64",
            "--query_max_length", "16",
            "--batch_sizes", "4,8",
            "--efficient_batch_sizes", "",
            "--mini_batch_size", "2",
            "--warmup_steps", "0",
            "--steps", "1",
            "--memory_cap_gb", "1e-6",
        ]
    )  # fmt: skip
    report = json.loads((out / "benchmark.json").read_text())
    rows = {(r["batch_size"], r["method"]): r for r in report["rows"]}
    has_st = importlib.util.find_spec("sentence_transformers") is not None

    # origin ran once; at batch 8 it was predicted past the (tiny) cap instead of run
    assert rows[(8, "origin")]["skipped"].startswith("predicted")
    for key in [(4, "origin"), (4, "efficient"), (8, "efficient")]:
        row = rows[key]
        assert row["peak_mb"] > row["baseline_mb"] > 0 and row["seconds_per_step"] > 0
        assert row["tokens_per_s"] > 0 and 0 <= row["padding"] < 1
    # the tiny model has no dropout: all three methods compute the same loss
    assert rows[(4, "efficient")]["loss"] == pytest.approx(rows[(4, "origin")]["loss"], abs=1e-5)
    if has_st:
        assert rows[(4, "st")]["loss"] == pytest.approx(rows[(4, "origin")]["loss"], abs=1e-5)
        assert "st_over_efficient_time" in report["ratios"][0]

    text = report_md.read_text()
    assert text.startswith("# longcl benchmark\n\nCommand: `python benchmark.py --model_name")
    assert "| 8 | origin |" in text and "predicted" in text
    assert "efficient / origin s/step" in text
    if importlib.util.find_spec("matplotlib"):
        assert (out / "benchmark_memory.png").stat().st_size > 0

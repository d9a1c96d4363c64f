"""The rankers beside the dense one, corpus sampling, and the length-bucket breakdown."""

from __future__ import annotations

import math

import pytest
import torch

import data
import eval as eval_script
import retrieval
from metrics import mean_by_group, per_query
from tests.conftest import tiny_encoder
from tests.test_scripts import write_beir


@pytest.mark.parametrize(
    ("tokens", "bucket"),
    [(1, "<=512"), (512, "<=512"), (513, "513-2048"), (2048, "513-2048"), (2049, "2049-8192")]
    + [(8192, "2049-8192"), (8193, ">8192")],
)
def test_length_bucket_bounds(tokens, bucket):
    assert retrieval.length_bucket(tokens) == bucket


def test_ndcg_by_length_bucket_by_hand():
    lengths = {"d1": 100, "d2": 1000, "d3": 3000, "d4": 100, "d5": 600, "d6": 50}
    qrels = {
        "q1": {"d1": 1},  # <=512, ranked first: 1
        "q2": {"d2": 1, "d6": 0},  # 513-2048, ranked second: 1 / log2(3)
        "q3": {"d3": 1, "d4": 1},  # two positives, the longer decides: 2049-8192
        "q4": {"d5": 1},  # 513-2048, not retrieved: 0
        "q5": {"d6": 0},  # nothing relevant: no bucket
    }
    run = {
        "q1": {"d1": 3.0, "d2": 1.0},
        "q2": {"d6": 2.0, "d2": 1.0},
        "q3": {"d3": 3.0, "d1": 2.0, "d4": 1.0},  # relevant at ranks 1 and 3
        "q4": {"d1": 1.0},
        "q5": {"d6": 1.0},
    }
    q3 = (1 + 1 / math.log2(4)) / (1 + 1 / math.log2(3))

    buckets = eval_script.by_length(per_query(run, qrels), qrels, lengths)

    assert list(buckets) == ["<=512", "513-2048", "2049-8192"]  # length order, empty ones left out
    assert buckets["<=512"] == {"ndcg@20": 1.0, "queries": 1}
    assert buckets["513-2048"]["queries"] == 2
    assert buckets["513-2048"]["ndcg@20"] == pytest.approx((1 / math.log2(3) + 0) / 2)
    assert buckets["2049-8192"]["ndcg@20"] == pytest.approx(q3)


def test_mean_by_group_leaves_out_queries_without_a_group():
    values = {"a": {"m": 1.0}, "b": {"m": 0.5}, "c": {"m": 0.0}}
    assert mean_by_group(values, {"b": "x", "c": "x"}, "m") == {"x": {"m": 0.25, "queries": 2}}


def test_top_documents_keeps_ties_at_the_cut():
    scores = torch.tensor([[0.9, 0.5, 0.5, 0.1], [0.1, 0.2, 0.3, 0.4]])
    run = retrieval.top_documents(scores, ["q1", "q2"], ["a", "b", "c", "d"], top_k=2)
    assert set(run["q1"]) == {"a", "b", "c"}  # b and c tie for second place
    assert set(run["q2"]) == {"c", "d"}


def test_sample_corpus_keeps_judged_documents_and_fills_deterministically():
    dids = [f"d{i}" for i in range(20)]
    qrels = {"q": {"d3": 1, "d17": 0}}
    kept = retrieval.sample_corpus(dids, qrels, 5)
    assert len(kept) == 5 and {"d3", "d17"} <= set(kept)
    assert kept == sorted(kept, key=dids.index)  # corpus order
    assert retrieval.sample_corpus(dids, qrels, 5) == kept
    assert retrieval.sample_corpus(dids, qrels, 1) == ["d3", "d17"]  # judged ones stay
    assert retrieval.sample_corpus(dids, qrels, 0) == dids


def test_sample_queries_is_a_fixed_spread_sample():
    qids = [f"q{i:03d}" for i in range(100)]
    picked = retrieval.sample_queries(qids, 10)
    assert len(picked) == 10 and picked == sorted(picked)
    assert picked == retrieval.sample_queries(list(reversed(qids)), 10)  # input order is moot
    assert picked != qids[:10]  # not the first ten by id
    assert retrieval.sample_queries(qids, 0) == qids


def test_bm25_matches_the_lucene_formula_by_hand():
    docs = ["the cat sat on a mat", "dogs run", "cat and cat"]
    scores = retrieval.bm25_scores(docs, ["cat", "the of"])  # the second is all stop words
    # tokens after stop words: [cat, sat, mat], [dogs, run], [cat, cat]; average length 7 / 3
    idf = math.log(1 + (3 - 2 + 0.5) / (2 + 0.5))  # "cat" is in 2 of 3 documents

    def term(tf, length, k1=1.5, b=0.75):
        return tf / (tf + k1 * (1 - b + b * length / (7 / 3)))

    expected = [idf * term(1, 3), 0.0, idf * term(2, 2)]
    assert scores[0].tolist() == pytest.approx(expected, rel=1e-6)
    assert scores[1].tolist() == [0.0, 0.0, 0.0]


def test_windows_cover_the_text_without_overlap(tokenizer):
    tokenize = data.Tokenize(tokenizer, 6)  # 4 ids per window between [CLS] and [SEP]
    cut = retrieval.windows(list(range(100, 110)), tokenize)
    assert [w[1:-1] for w in cut] == [[100, 101, 102, 103], [104, 105, 106, 107], [108, 109]]
    assert all(w[0] == tokenizer.cls_token_id and w[-1] == tokenizer.sep_token_id for w in cut)
    assert retrieval.windows([], tokenize) == [tokenize.prefix + tokenize.suffix]


def test_maxsim_scores_a_document_by_its_best_window(tokenizer, one_thread):
    encoder = tiny_encoder().eval()
    docs = [" ".join(["network socket data"] * 12), "sorting a list in order", "compress " * 40]
    queries = ["open a network socket", "compress files"]
    q_ids, _ = data.Tokenize(tokenizer, 16)(queries)
    q_reps = retrieval.encode(encoder, q_ids, 4096, "queries")

    scores, vectors = retrieval.maxsim_scores(encoder, tokenizer, docs, q_reps, 16, 48, 4096)

    # reference: each document's first three 14-token windows encoded one at a time
    tokenize = data.Tokenize(tokenizer, 16)
    expected, count = torch.empty(2, 3), 0
    for d, text in enumerate(docs):
        bare = tokenizer(text, add_special_tokens=False)["input_ids"][: 3 * tokenize.budget]
        cut = retrieval.windows(bare, tokenize)
        count += len(cut)
        with torch.no_grad():
            w_reps = torch.cat([encoder(**data.pad([w], 0)) for w in cut])
        expected[:, d] = (q_reps @ w_reps.T).max(dim=1).values
    assert vectors == count and count > len(docs)  # long documents gave several windows
    torch.testing.assert_close(scores, expected, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("retriever", ["bm25", "maxsim"])
def test_eval_reports_buckets_stats_and_index_size(retriever, tiny_model_dir, tmp_path):
    beir = write_beir(tmp_path / "beir")
    result = eval_script.main(
        ["--retriever", retriever, "--model_name_or_path", str(tiny_model_dir),
         "--data_dir", str(beir), "--max_length", "128", "--run_file", str(tmp_path / "r.trec")]
    )  # fmt: skip
    assert result["retriever"] == retriever and result["documents"] == 8
    assert result["ndcg@20_by_length"]["<=512"]["queries"] == 8
    assert 0 < result["doc_tokens_median"] <= result["doc_tokens_p90"] < 64
    # the fixture's documents fit in one 64-token window; bm25 stores no vectors
    assert result["vectors_per_document"] == (1.0 if retriever == "maxsim" else 0.0)
    if retriever == "bm25":
        assert result["mrr@20"] > 0.5  # the queries share words with their documents


def test_bm25_on_a_corpus_without_words_scores_zero():
    assert retrieval.bm25_scores(["!!!", "the of and"], ["cat"]).tolist() == [[0.0, 0.0]]


def test_eval_refuses_lengths_maxsim_cannot_honour_and_bad_numbers(tiny_model_dir, tmp_path):
    beir = write_beir(tmp_path / "beir")
    common = ["--model_name_or_path", str(tiny_model_dir), "--data_dir", str(beir)]
    with pytest.raises(data.DataError, match="not a multiple of 64"):
        eval_script.main([*common, "--retriever", "maxsim", "--max_length", "100"])
    for flag, value in [("--top_k", "0"), ("--max_queries", "-2"), ("--max_docs", "-1")]:
        with pytest.raises(SystemExit):
            eval_script.parse_args([*common, flag, value])

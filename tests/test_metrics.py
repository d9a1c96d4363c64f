"""metrics.py against hand-computed answers and a line-by-line trec_eval transliteration.

Expected values are written as the fraction worked out in the comment beside
them. The reference at the bottom re-implements trec_eval's own loops
(form_res_rels.c comp_sim_docno, m_recall.c, m_recip_rank.c, m_ndcg_cut.c,
meas_avg.c with -c) independently of metrics.py's code paths.
"""

from __future__ import annotations

import functools
import math
import os
import random
from pathlib import Path

import numpy as np
import pytest

import metrics
from metrics import evaluate, per_query, rank, read_qrels, read_run, write_run

INV_LOG2_3 = 1 / math.log2(3)  # discount at rank 2
INV_LOG2_4 = 1 / 2  # discount at rank 3


def write(tmp_path: Path, name: str, text: str) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def one_query(run: dict[str, float], judged: dict[str, int], **kw) -> dict[str, float]:
    return per_query({"q": run}, {"q": judged}, **kw)["q"]


# ---------------------------------------------------------------- ranking


def test_rank_score_descending_then_doc_id_descending():
    scores = {"d1": 1.0, "d3": 1.0, "d2": 1.0, "d0": 2.0, "d10": 1.0, "d9": 1.0}
    # strcmp descending: "d9" > "d3" > "d2" > "d10" > "d1" ('9' > '3' > '2' > '1', "d10" > "d1")
    assert rank(scores) == ["d0", "d9", "d3", "d2", "d10", "d1"]


def test_tie_break_descending_changes_mrr_negative_control():
    # a and b tie; trec_eval puts b (larger id) first, so the relevant a sits at rank 2
    values = one_query({"a": 0.5, "b": 0.5}, {"a": 1})
    assert values["mrr@20"] == pytest.approx(1 / 2)
    assert values["recall@1"] == 0.0  # 0 relevant in top 1 / 1 relevant
    # negative control: ascending ids (ranx/MS MARCO style) would give a at rank 1
    ascending = sorted(["a", "b"])
    assert ascending.index("a") + 1 == 1 and values["mrr@20"] != 1.0


def test_float32_close_scores_are_ordered_in_float64():
    low, high = 0.30000001, 0.30000002
    assert np.float32(low) == np.float32(high)  # a float32 reader would see a tie ...
    scores = {"a": high, "b": low}
    # ... and break it by id descending (b first); float64 keeps a ahead
    assert rank(scores) == ["a", "b"]
    assert one_query(scores, {"a": 1})["mrr@20"] == 1.0  # 1/1, not 1/2


def test_float32_close_scores_survive_file_round_trip(tmp_path):
    run = {"q": {"a": 0.30000002, "b": 0.30000001, "c": np.float32(0.25)}}
    path = tmp_path / "run.trec"
    write_run(path, run)
    back = read_run(path)
    assert back["q"] == {"a": 0.30000002, "b": 0.30000001, "c": float(np.float32(0.25))}
    assert rank(back["q"]) == ["a", "b", "c"]


def test_rank_rejects_nan():
    with pytest.raises(ValueError, match="NaN"):
        rank({"a": math.nan, "b": 1.0})


# ---------------------------------------------------------------- metric values


def test_graded_ndcg_uses_raw_grade_and_log2_rank_plus_1():
    # run: a (grade 2) rank 1, x (unjudged) rank 2, b (grade 1) rank 3
    values = one_query({"a": 3.0, "x": 2.0, "b": 1.0}, {"a": 2, "b": 1, "c": 0})
    dcg = 2 / 1 + 1 * INV_LOG2_4  # 2/log2(2) + 1/log2(4) = 5/2
    idcg = 2 / 1 + 1 * INV_LOG2_3  # ideal order a, b: 2/log2(2) + 1/log2(3)
    assert values["ndcg@20"] == pytest.approx(dcg / idcg)
    assert values["ndcg@20"] == pytest.approx(0.950234, abs=1e-6)  # 2.5 / 2.630930


def test_ideal_dcg_counts_unretrieved_relevant_documents():
    # only a (grade 1) is retrieved; b (grade 3) is judged but missing from the run
    values = one_query({"a": 1.0}, {"a": 1, "b": 3})
    # dcg = 1/log2(2) = 1; idcg = 3/log2(2) + 1/log2(3)
    assert values["ndcg@20"] == pytest.approx(1 / (3 + INV_LOG2_3))
    assert values["recall@20"] == pytest.approx(1 / 2)  # 1 of 2 relevant


def test_grade_zero_rows_are_judged_non_relevant():
    values = one_query({"a": 2.0, "b": 1.0}, {"a": 0, "b": 1})
    assert values["mrr@20"] == pytest.approx(1 / 2)  # first grade >= 1 is b at rank 2
    assert values["recall@1"] == 0.0  # 0 / 1 relevant
    assert values["recall@5"] == 1.0  # 1 / 1 relevant
    assert values["ndcg@20"] == pytest.approx(INV_LOG2_3 / 1)  # (1/log2 3) / (1/log2 2)


def test_recall_divides_by_all_relevant_not_min_k_r():
    judged = {f"r{i:02d}": 1 for i in range(30)}  # R = 30 > every cutoff
    run = {docid: 100.0 - i for i, docid in enumerate(judged)}  # all 30 at the top
    values = one_query(run, judged)
    assert values["recall@1"] == pytest.approx(1 / 30)
    assert values["recall@5"] == pytest.approx(5 / 30)
    assert values["recall@20"] == pytest.approx(20 / 30)  # min(k, R) would say 1
    assert values["ndcg@20"] == pytest.approx(1.0)  # ideal is also cut at 20
    assert values["mrr@20"] == 1.0


def test_mrr_counts_only_ranks_within_cutoff():
    run = {f"n{i:02d}": 100.0 - i for i in range(20)} | {"rel": 1.0}  # rel at rank 21
    values = one_query(run, {"rel": 1}, ks={"mrr": (20, 21)})
    assert values == {"mrr@20": 0.0, "mrr@21": pytest.approx(1 / 21)}


def test_query_with_no_relevant_document_scores_zero_and_counts():
    run = {"q1": {"a": 1.0}, "q2": {"a": 1.0, "b": 0.5}}
    qrels = {"q1": {"a": 1}, "q2": {"a": 0, "b": 0}}
    assert set(per_query(run, qrels)["q2"].values()) == {0.0}
    result = evaluate(run, qrels)
    assert result["num_queries"] == 2
    assert result["mrr@20"] == pytest.approx(1 / 2)  # (1 + 0) / 2 queries
    assert result["missing_queries"] == []


def test_missing_query_scores_zero_and_run_only_query_is_ignored():
    run = {"q1": {"a": 1.0}, "q9": {"a": 1.0}}  # q9 has no qrels
    qrels = {"q1": {"a": 1}, "q2": {"b": 2}}
    values = per_query(run, qrels)
    assert set(values) == {"q1", "q2"}
    assert set(values["q2"].values()) == {0.0}
    result = evaluate(run, qrels)
    assert result["missing_queries"] == ["q2"]
    assert result["num_queries"] == 2
    for name in ("recall@1", "recall@5", "recall@20", "mrr@20", "ndcg@20"):
        assert result[name] == pytest.approx(1 / 2)  # q1 perfect (1), q2 missing (0), / 2


def test_evaluate_keys_follow_cutoffs_and_default():
    run, qrels = {"q": {"a": 1.0}}, {"q": {"a": 1}}
    assert set(evaluate(run, qrels)) == {
        "recall@1",
        "recall@5",
        "recall@20",
        "mrr@20",
        "ndcg@20",
        "num_queries",
        "missing_queries",
    }
    custom = evaluate(run, qrels, ks={"recall": (2,), "ndcg": (1, 3)})
    assert set(custom) == {"recall@2", "ndcg@1", "ndcg@3", "num_queries", "missing_queries"}


@pytest.mark.parametrize("ks", [{"recall": (0,)}, {"ndcg": (5, 5)}, {"map": (10,)}])
def test_bad_cutoffs_are_refused(ks):
    with pytest.raises(ValueError):
        per_query({"q": {"a": 1.0}}, {"q": {"a": 1}}, ks=ks)


def test_empty_qrels_is_refused():
    with pytest.raises(ValueError, match="no queries"):
        evaluate({"q": {"a": 1.0}}, {})


# ---------------------------------------------------------------- files


TREC_QRELS = "q1 0 d1 2\nq1 0 d2 0\n\nq2 0 d3 1\n"
BEIR_QRELS = "query-id\tcorpus-id\tscore\nq1\td1\t2\nq1\td2\t0\nq2\td3\t1\n"


def test_qrels_formats_read_the_same(tmp_path):
    expected = {"q1": {"d1": 2, "d2": 0}, "q2": {"d3": 1}}
    assert read_qrels(write(tmp_path, "q.trec", TREC_QRELS)) == expected
    assert read_qrels(write(tmp_path, "q.tsv", BEIR_QRELS)) == expected


def test_identical_duplicate_qrels_row_is_accepted(tmp_path):
    path = write(tmp_path, "q.trec", "q1 0 d1 1\nq1 0 d1 1\n")
    assert read_qrels(path) == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    ("name", "text", "line", "needle"),
    [
        ("q.trec", "q1 0 d1 1\nq1 0 d2\n", 2, "expected 4 fields"),
        ("q.trec", "q1 0 d1 1\nq1 0 d2 1\nq1 0 d3 1.5\n", 3, "field 4 (grade)"),
        ("q.trec", "q1 0 d1 1\nq2 0 d1 1\nq1 0 d1 2\n", 3, "line 1 gave 1"),
        ("q.tsv", "query-id\tcorpus-id\tscore\nq1\td1\tyes\n", 2, "field 3 (score)"),
        ("q.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq1 d2 1\n", 3, "expected 3 fields"),
    ],
)
def test_qrels_errors_name_file_line_and_field(tmp_path, name, text, line, needle):
    path = write(tmp_path, name, text)
    with pytest.raises(metrics.FormatError) as caught:
        read_qrels(path)
    message = str(caught.value)
    assert str(path) in message and f"line {line}:" in message and needle in message
    assert caught.value.line == line and isinstance(caught.value, ValueError)


@pytest.mark.parametrize(
    ("text", "line", "needle"),
    [
        ("q1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 0.8 t\nq1 Q0 d1 3 0.7 t\n", 3, "duplicate doc 'd1'"),
        ("q1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 high t\n", 2, "field 5 (score)"),
        ("q1 Q0 d1 1 nan t\n", 1, "field 5 (score)"),
        ("q1 Q0 d1 1 0.9 t\nq1 Q0 d2 2 0.8\n", 2, "expected 6 fields"),
    ],
)
def test_run_errors_name_file_and_line(tmp_path, text, line, needle):
    path = write(tmp_path, "run.trec", text)
    with pytest.raises(metrics.FormatError) as caught:
        read_run(path)
    message = str(caught.value)
    assert str(path) in message and f"line {line}:" in message and needle in message


def test_same_doc_id_under_two_queries_is_not_a_duplicate(tmp_path):
    path = write(tmp_path, "run.trec", "q1 Q0 d1 1 0.9 t\nq2 Q0 d1 1 0.8 t\n")
    assert read_run(path) == {"q1": {"d1": 0.9}, "q2": {"d1": 0.8}}


def test_rank_column_is_ignored(tmp_path):
    # the file claims d1 is rank 1, but d2 has the higher score
    path = write(tmp_path, "run.trec", "q1 Q0 d1 1 0.1 t\nq1 Q0 d2 2 0.2 t\n")
    run = read_run(path)
    assert rank(run["q1"]) == ["d2", "d1"]
    assert per_query(run, {"q1": {"d1": 1}})["q1"]["mrr@20"] == pytest.approx(1 / 2)


def test_write_run_ranks_in_trec_eval_order_atomically(tmp_path):
    run = {"q2": {"b": 1.0, "a": 1.0, "c": 3.0}, "q1": {"x": -1e-300}, "empty": {}}
    path = tmp_path / "run.trec"
    path.write_text("stale\n")
    write_run(path, run, tag="sys")
    assert path.read_text().splitlines() == [
        "q1 Q0 x 1 -1e-300 sys",
        "q2 Q0 c 1 3.0 sys",
        "q2 Q0 b 2 1.0 sys",
        "q2 Q0 a 3 1.0 sys",
    ]
    assert os.listdir(tmp_path) == ["run.trec"]  # no temp file left behind
    assert read_run(path) == {"q1": {"x": -1e-300}, "q2": {"a": 1.0, "b": 1.0, "c": 3.0}}


def test_write_run_refuses_whitespace_ids_and_keeps_old_file(tmp_path):
    path = write(tmp_path, "run.trec", "old\n")
    with pytest.raises(ValueError, match="whitespace"):
        write_run(path, {"q1": {"bad id": 1.0}})
    assert path.read_text() == "old\n" and os.listdir(tmp_path) == ["run.trec"]


def test_end_to_end_from_files(tmp_path):
    qrels = read_qrels(write(tmp_path, "q.tsv", BEIR_QRELS))
    run = read_run(write(tmp_path, "run.trec", "q1 Q0 d2 1 5 t\nq1 Q0 d1 2 4 t\nq3 Q0 d3 1 1 t\n"))
    result = evaluate(run, qrels)
    # q1: d1 (grade 2) at rank 2 -> mrr 1/2, ndcg (2/log2 3)/(2/log2 2); q2 missing -> 0
    assert result["mrr@20"] == pytest.approx((1 / 2 + 0) / 2)
    assert result["ndcg@20"] == pytest.approx((INV_LOG2_3 + 0) / 2)
    assert result["recall@1"] == 0.0 and result["recall@5"] == pytest.approx(1 / 2)
    assert result["missing_queries"] == ["q2"] and result["num_queries"] == 2


# ---------------------------------------------------------------- trec_eval transliteration


def _comp_sim_docno(p1, p2):
    """form_res_rels.c: sim descending, then strcmp(p2->docno, p1->docno)."""
    (doc1, sim1), (doc2, sim2) = p1, p2
    if sim1 > sim2:
        return -1
    if sim1 < sim2:
        return 1
    return (doc2 > doc1) - (doc2 < doc1)


def _reference_query(scores, judged, cutoffs):
    ranked = sorted(scores.items(), key=functools.cmp_to_key(_comp_sim_docno))
    rel_list = [judged.get(doc, -1) for doc, _ in ranked]  # -1 = RELVALUE_NONPOOL
    num_rel = sum(1 for g in judged.values() if g >= 1)
    levels = [0] * (max([g for g in judged.values() if g >= 0] + [0]) + 1)
    for g in judged.values():
        if g >= 0:
            levels[g] += 1
    out = {}
    for k in cutoffs:
        # m_recall.c: rel_so_far over the first k, / num_rel; 0 when num_rel == 0
        rel_so_far = sum(1 for r in rel_list[:k] if r >= 1)
        out[f"recall@{k}"] = rel_so_far / num_rel if num_rel else 0.0
        # m_recip_rank.c on a run cut at k (trec_eval -M k)
        first = next((i for i, r in enumerate(rel_list[:k]) if r >= 1), None)
        out[f"mrr@{k}"] = 1.0 / (first + 1) if first is not None else 0.0
        # m_ndcg_cut.c: dcg with gain / log2(i + 2), ideal walked down the rel_levels
        dcg = sum(r / math.log2(i + 2) for i, r in enumerate(rel_list[:k]) if r > 0)
        ideal, i = 0.0, 0
        for level in range(len(levels) - 1, 0, -1):
            for _ in range(levels[level]):
                if i < k:
                    ideal += level / math.log2(i + 2)
                i += 1
        out[f"ndcg@{k}"] = dcg / ideal if ideal > 0 else dcg
    return out


def _random_case(rng: random.Random):
    docs = [f"d{i}" for i in range(rng.randint(1, 40))]
    qrels, run = {}, {}
    for q in range(rng.randint(1, 8)):
        qid = f"q{q}"
        qrels[qid] = {
            d: rng.choice([-1, 0, 0, 1, 2, 3]) for d in rng.sample(docs, rng.randint(1, len(docs)))
        }
        if rng.random() < 0.8:  # some qrels queries missing from the run
            # few distinct scores, so ties are common
            run[qid] = {
                d: float(rng.randint(0, 5)) for d in rng.sample(docs, rng.randint(1, len(docs)))
            }
    run["extra"] = {"d0": 1.0}  # run-only query
    return run, qrels


def test_matches_trec_eval_transliteration_on_random_runs():
    rng = random.Random(0)
    cutoffs = (1, 3, 5, 10, 20)
    ks = {"recall": cutoffs, "mrr": cutoffs, "ndcg": cutoffs}
    for _ in range(300):
        run, qrels = _random_case(rng)
        expected = {q: _reference_query(run.get(q, {}), qrels[q], cutoffs) for q in qrels}
        got = per_query(run, qrels, ks=ks)
        assert set(got) == set(expected)
        for qid, values in expected.items():
            assert got[qid] == pytest.approx(values, abs=1e-12)
        means = evaluate(run, qrels, ks=ks)
        for name in expected[next(iter(expected))]:
            mean = sum(v[name] for v in expected.values()) / len(qrels)  # -c: / all qrels queries
            assert means[name] == pytest.approx(mean, abs=1e-12)

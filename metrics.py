"""Retrieval metrics computed the way trec_eval computes them.

Reads TREC or BEIR qrels and TREC runs, writes runs, and scores a run with
recall@k, MRR@k and nDCG@k. Pure Python; no torch, no trec_eval binary.

What "the way trec_eval does" means here (trec_eval 9.x source files named):

- Ranking (form_res_rels.c, ``comp_sim_docno``): the rank column of a run is
  ignored; documents are sorted by score descending, ties broken by
  ``strcmp(docno2, docno1)``, i.e. document id descending in byte order.
  Python compares ``str`` by code point, which is the same order as the
  UTF-8 bytes. Scores are float64 (trec_format.h: ``double sim``; older
  releases stored ``float`` and merged scores that differ past ~7 digits).
- Relevant means grade >= 1 (trec_eval's default ``-l 1``).
- ``recall@k`` (m_recall.c): relevant in the top k / all relevant in the
  qrels, not min(k, R). A query with no relevant document scores 0.
- ``mrr@k``: 1 / rank of the first relevant document if it is within the top
  k, else 0. trec_eval's ``recip_rank`` (m_recip_rank.c) has no cutoff; this
  equals ``recip_rank`` with ``-M k`` (the run cut to k after sorting).
- ``ndcg@k`` (m_ndcg_cut.c): gain is the raw grade (grades <= 0 give
  nothing), discount log2(rank + 1), ideal DCG from the query's positive
  qrels grades cut at k. A query whose ideal DCG is 0 scores 0.
- Averaging (trec_eval.c and meas_avg.c with ``-c``): the mean is over every
  query in the qrels. A qrels query missing from the run scores 0 on every
  metric; a query judged only non-relevant scores 0 and still counts. Run
  queries absent from the qrels are ignored.

Input differs from trec_eval's readers (get_qrels.c, get_trec_results.c)
only where they would be silent or fussy: a non-numeric or NaN score and a
non-integer grade are errors instead of atof/atol's 0; a run line needs
exactly 6 fields (trec_eval ignores extras); blank lines are skipped in both
files; an identical repeated qrels row is accepted (trec_eval rejects any
repeat), a repeat with another grade is an error.
"""

from __future__ import annotations

import heapq
import itertools
import math
import numbers
import os
import re
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType

Qrels = dict[str, dict[str, int]]
Run = dict[str, dict[str, float]]

# metric family -> cutoffs; read-only so the default argument cannot be mutated
DEFAULT_CUTOFFS: Mapping[str, tuple[int, ...]] = MappingProxyType(
    {"recall": (1, 5, 20), "mrr": (20,), "ndcg": (20,)}
)

BEIR_HEADER = ("query-id", "corpus-id", "score")
TREC_QRELS_FIELDS = ("qid", "iter", "docid", "grade")
TREC_RUN_FIELDS = ("qid", "Q0", "docid", "rank", "score", "tag")
RELEVANCE_LEVEL = 1
# qrels layouts: field names, separator (None = any whitespace), docid and grade positions
BEIR_LAYOUT = (BEIR_HEADER, "\t", 1, 2)
TREC_LAYOUT = (TREC_QRELS_FIELDS, None, 2, 3)
INTEGER = re.compile(r"[+-]?[0-9]+")


class FormatError(ValueError):
    """A qrels or run file that cannot be read; names file, line (None: the whole file), field."""

    def __init__(self, path: str | os.PathLike, line: int | None, message: str) -> None:
        where = os.fspath(path) if line is None else f"{os.fspath(path)}, line {line}"
        super().__init__(f"{where}: {message}")
        self.path = os.fspath(path)
        self.line = line


# ---------------------------------------------------------------- reading


def _lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, text) for non-blank, non-comment lines."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as err:
                raise FormatError(path, number, f"not valid UTF-8 ({err.reason})") from None
            # trec_eval skips '#' comment lines in both file types
            if text.strip() and not text.lstrip().startswith("#"):
                yield number, text


def _field_error(path, line: int, index: int, names: Sequence[str], problem: str) -> FormatError:
    return FormatError(path, line, f"field {index + 1} ({names[index]}): {problem}")


def _parse_grade(path, line: int, text: str, index: int, names: Sequence[str]) -> int:
    # a strict pattern: int() would also take "1_0" and non-ASCII digits; a grade needs few digits
    if not INTEGER.fullmatch(text) or len(text) > 18:
        shown = text if len(text) <= 40 else f"{text[:40]}... ({len(text)} characters)"
        raise _field_error(path, line, index, names, f"expected an integer, got {shown!r}")
    return int(text)


def _split(path, line: int, text: str, names: Sequence[str], sep: str | None) -> list[str]:
    fields = [f.strip() for f in text.split(sep)] if sep else text.split()
    if len(fields) != len(names):
        layout = " ".join(names)
        shown = text if len(text) <= 80 else f"{text[:80]}... ({len(text)} characters)"
        raise FormatError(
            path, line, f"expected {len(names)} fields ({layout}), got {len(fields)}: {shown!r}"
        )
    return fields


def read_qrels(path: str | os.PathLike) -> Qrels:
    """Read relevance judgements as ``{qid: {docid: grade}}``.

    Accepts TREC qrels (``qid iter docid grade``, whitespace separated) or a
    BEIR tsv (``query-id<TAB>corpus-id<TAB>score`` after that exact header);
    the header decides. Grade 0 and negative rows are kept: they are judged
    non-relevant, and a query with only such rows still counts in the mean.
    Raises FormatError (a ValueError) naming file, line and field for a wrong
    field count, a non-integer grade, or a (qid, docid) pair repeated with a
    different grade; an exact repeat is accepted.
    """
    rows = _lines(path)
    first = next(rows, None)
    if first is None:
        raise FormatError(path, None, "no judgements in file")
    beir = tuple(f.strip() for f in first[1].split("\t")) == BEIR_HEADER
    names, sep, docid_at, grade_at = BEIR_LAYOUT if beir else TREC_LAYOUT
    if not beir:
        rows = itertools.chain([first], rows)  # no header: the first line is data

    qrels: Qrels = {}
    first_seen: dict[tuple[str, str], int] = {}
    for line, text in rows:
        fields = _split(path, line, text, names, sep)
        qid, docid = fields[0], fields[docid_at]
        grade = _parse_grade(path, line, fields[grade_at], grade_at, names)
        judged = qrels.setdefault(qid, {})
        if docid in judged and judged[docid] != grade:
            earlier = first_seen[qid, docid]
            raise _field_error(
                path,
                line,
                grade_at,
                names,
                f"({qid!r}, {docid!r}) has grade {grade}, but line {earlier} gave {judged[docid]}",
            )
        first_seen.setdefault((qid, docid), line)
        judged[docid] = grade
    return qrels


def _parse_score(path, line: int, text: str) -> float:
    try:
        score = float(text)
    except ValueError:
        score = math.nan
    if math.isnan(score):
        problem = f"expected a number, got {text!r}"
        raise _field_error(path, line, 4, TREC_RUN_FIELDS, problem)
    return score


def read_run(path: str | os.PathLike) -> Run:
    """Read a TREC run (``qid Q0 docid rank score tag``) as ``{qid: {docid: score}}``.

    Scores are parsed to float64 (never float32). The rank, Q0 and tag
    columns are ignored: order comes from ``rank()`` on the scores.
    Raises FormatError naming file and line for a wrong field count, a
    non-numeric or NaN score (field 5), or a doc id repeated within a query,
    and naming the file when it holds no result at all.
    """
    run: Run = {}
    first_seen: dict[tuple[str, str], int] = {}
    for line, text in _lines(path):
        qid, _, docid, _, score_text, _ = _split(path, line, text, TREC_RUN_FIELDS, None)
        score = _parse_score(path, line, score_text)
        if (qid, docid) in first_seen:
            earlier = first_seen[qid, docid]
            problem = f"duplicate doc {docid!r} for query {qid!r} (first on line {earlier})"
            raise _field_error(path, line, 2, TREC_RUN_FIELDS, problem)
        first_seen[qid, docid] = line
        run.setdefault(qid, {})[docid] = score
    if not run:
        raise FormatError(path, None, "no results in file")
    return run


# ---------------------------------------------------------------- ranking and writing


def _order_key(item: tuple[str, float]) -> tuple[float, str]:
    docid, score = item
    score = float(score)  # float64; numpy float32 widens exactly
    if math.isnan(score):
        raise ValueError(f"score of doc {docid!r} is NaN; it has no place in a ranking")
    return score, docid


def rank(scores: Mapping[str, float]) -> list[str]:
    """Doc ids in trec_eval order: score descending, then doc id descending.

    Scores are compared as float64. Raises ValueError on a NaN score.
    """
    # both keys descend, so one reversed sort gives trec_eval's comp_sim_docno order
    return [docid for docid, _ in sorted(scores.items(), key=_order_key, reverse=True)]


def _top(scores: Mapping[str, float], k: int) -> list[str]:
    """The first k ids of ``rank(scores)`` in O(n log k); keys are unique so order is exact."""
    return [docid for docid, _ in heapq.nlargest(k, scores.items(), key=_order_key)]


def _check_token(kind: str, value: str) -> None:
    if not value or any(c.isspace() for c in value):
        raise ValueError(
            f"{kind} {value!r} is empty or contains whitespace; TREC lines can't hold it"
        )


def write_run(
    path: str | os.PathLike, run: Mapping[str, Mapping[str, float]], tag: str = "longcl"
) -> None:
    """Write ``run`` as a TREC run file, atomically (temp file + os.replace).

    Queries are written in sorted order, documents in ``rank()`` order with
    ranks from 1, scores as ``repr(float(score))`` so that ``read_run``
    returns the same float64 values and hence the same ranking. A query with
    no documents cannot be represented and is omitted. Raises ValueError on a
    NaN score or an id or tag that is empty or contains whitespace.
    """
    _check_token("tag", tag)
    lines = []
    for qid in sorted(run):
        _check_token("query id", qid)
        scores = run[qid]
        for position, docid in enumerate(rank(scores), start=1):
            _check_token("doc id", docid)
            lines.append(f"{qid} Q0 {docid} {position} {float(scores[docid])!r} {tag}\n")

    path = os.fspath(path)
    fd, tmp = tempfile.mkstemp(dir=os.path.dirname(path) or ".", prefix=".tmp-run-")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.writelines(lines)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


# ---------------------------------------------------------------- metrics


def _check_cutoffs(ks: Mapping[str, Sequence[int]]) -> None:
    unknown = set(ks) - set(DEFAULT_CUTOFFS)
    if unknown:
        raise ValueError(f"unknown metrics {sorted(unknown)}; known: {sorted(DEFAULT_CUTOFFS)}")
    for name, cutoffs in ks.items():
        positive = all(isinstance(k, numbers.Integral) and k >= 1 for k in cutoffs)
        # trec_eval: "Cutoffs must be positive without duplicates"
        if not positive or len(set(cutoffs)) != len(cutoffs):
            raise ValueError(f"{name} cutoffs must be distinct positive integers, got {cutoffs!r}")


def _metric_names(ks: Mapping[str, Sequence[int]]) -> list[str]:
    return [f"{name}@{k}" for name, cutoffs in ks.items() for k in cutoffs]


def _recall(grades: list[int], num_rel: int, k: int) -> float:
    if num_rel == 0:
        return 0.0
    return sum(g >= RELEVANCE_LEVEL for g in grades[:k]) / num_rel


def _mrr(grades: list[int], k: int) -> float:
    for position, grade in enumerate(grades[:k], start=1):
        if grade >= RELEVANCE_LEVEL:
            return 1.0 / position
    return 0.0


def _dcg(gains: Sequence[int]) -> float:
    return sum(g / math.log2(position + 1) for position, g in enumerate(gains, start=1) if g > 0)


def _ndcg(grades: list[int], ideal: list[int], k: int) -> float:
    ideal_dcg = _dcg(ideal[:k])
    return _dcg(grades[:k]) / ideal_dcg if ideal_dcg > 0 else 0.0


def _query_metrics(
    scores: Mapping[str, float], judged: Mapping[str, int], ks: Mapping[str, Sequence[int]]
) -> dict[str, float]:
    """All metrics for one query; ``scores`` may be empty (query missing from the run)."""
    depth = max((k for cutoffs in ks.values() for k in cutoffs), default=0)
    # unjudged docs get grade 0, as trec_eval's RELVALUE_NONPOOL counts as non-relevant
    grades = [judged.get(docid, 0) for docid in _top(scores, depth)]
    num_rel = sum(g >= RELEVANCE_LEVEL for g in judged.values())
    ideal = sorted((g for g in judged.values() if g > 0), reverse=True)
    compute = {
        "recall": lambda k: _recall(grades, num_rel, k),
        "mrr": lambda k: _mrr(grades, k),
        "ndcg": lambda k: _ndcg(grades, ideal, k),
    }
    return {f"{name}@{k}": compute[name](k) for name, cutoffs in ks.items() for k in cutoffs}


def per_query(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Mapping[str, Sequence[int]] = DEFAULT_CUTOFFS,
) -> dict[str, dict[str, float]]:
    """Per-query metrics ``{qid: {"recall@1": ..., ...}}`` for every qrels query.

    ``ks`` maps a metric family (``recall``, ``mrr``, ``ndcg``) to its
    cutoffs. Queries missing from the run get 0 for every metric; run-only
    queries are left out. Values are fractions in [0, 1].

    Only the top max(k) documents of each query are ordered (O(n log k)). A
    caller that cuts runs short first must keep every document tied with the
    last one kept, or a tie at the cut may be resolved unlike trec_eval.
    """
    _check_cutoffs(ks)
    return {qid: _query_metrics(run.get(qid, {}), qrels[qid], ks) for qid in sorted(qrels)}


def evaluate(
    run: Mapping[str, Mapping[str, float]],
    qrels: Mapping[str, Mapping[str, int]],
    ks: Mapping[str, Sequence[int]] = DEFAULT_CUTOFFS,
) -> dict[str, float | int | list[str]]:
    """Mean metrics over all qrels queries, as trec_eval ``-c`` averages them.

    Returns ``{"recall@1": ..., "recall@5": ..., "recall@20": ...,
    "mrr@20": ..., "ndcg@20": ..., "num_queries": int,
    "missing_queries": [qid, ...]}`` (metric keys follow ``ks``).
    ``num_queries`` is the number of qrels queries (the denominator);
    ``missing_queries`` lists, sorted, those with no document in the run,
    which scored 0. Raises ValueError if ``qrels`` is empty.
    """
    if not qrels:
        raise ValueError("qrels has no queries; there is nothing to average over")
    values = per_query(run, qrels, ks)
    means = {
        name: math.fsum(q[name] for q in values.values()) / len(values)
        for name in _metric_names(ks)
    }
    missing = sorted(qid for qid in qrels if not run.get(qid))
    return {**means, "num_queries": len(values), "missing_queries": missing}


def mean_by_group(
    values: Mapping[str, Mapping[str, float]], groups: Mapping[str, str], metric: str
) -> dict[str, dict[str, float | int]]:
    """Mean of one per-query metric within each group: ``{group: {metric: mean, "queries": n}}``.

    ``values`` is what ``per_query`` returns; ``groups`` maps a query id to its
    group (a query without one is left out). Groups come in order of first appearance.
    """
    members: dict[str, list[float]] = {}
    for qid, group in groups.items():
        members.setdefault(group, []).append(values[qid][metric])
    return {
        group: {metric: math.fsum(v) / len(v), "queries": len(v)} for group, v in members.items()
    }

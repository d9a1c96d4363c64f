"""Ranking a BEIR corpus three ways, and the document-length view of the results.

- dense: one vector per document from an encoder, scored by dot product with the query's;
- maxsim: the encoder at its native length over consecutive windows of each document, a
  document scored by its best window: what one does instead of extending positions;
- bm25: the bm25s library over each document's whole text.

Each ranker returns a [n_queries, n_docs] score matrix; `top_documents` turns it into a run,
keeping ties at the cut so that trec_eval's tie-breaking still sees them (see metrics.py).
"""

from __future__ import annotations

import hashlib
import math
import statistics
from collections.abc import Mapping

import torch
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

import data
import metrics
from model import Encoder

# (upper bound in tokens, name): a document's bucket is the first whose bound it does not exceed
LENGTH_BUCKETS = ((512, "<=512"), (2048, "513-2048"), (8192, "2049-8192"), (math.inf, ">8192"))


@torch.no_grad()
def encode(encoder: Encoder, ids: list[list[int]], max_tokens: int, desc: str) -> torch.Tensor:
    """[len(ids), hidden] representations, batched by a token budget.

    Texts are encoded longest first so each batch pads to similar lengths;
    a batch holds as many texts as fit in `max_tokens` padded tokens.
    """
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    reps = torch.empty(len(ids), encoder.backbone.config.hidden_size)
    progress = tqdm(total=len(ids), desc=desc, unit="text", dynamic_ncols=True)
    start = 0
    while start < len(order):
        size = max(1, max_tokens // len(ids[order[start]]))
        chunk = order[start : start + size]
        reps[chunk] = encoder.embed([ids[i] for i in chunk]).float().cpu()
        progress.update(len(chunk))
        start += size
    progress.close()
    return reps


def windows(bare: list[int], tokenize: data.Tokenize) -> list[list[int]]:
    """Consecutive, non-overlapping windows of `bare` token ids, each wrapped in special tokens.

    A window holds `tokenize.budget` ids (the model's length less its special
    tokens); an empty text still gets one window.
    """
    step = tokenize.budget
    return [
        tokenize.prefix + bare[start : start + step] + tokenize.suffix
        for start in range(0, max(len(bare), 1), step)
    ]


def maxsim_scores(
    encoder: Encoder,
    tokenizer: PreTrainedTokenizerBase,
    doc_texts: list[str],
    q_reps: torch.Tensor,
    window: int,
    max_length: int,
    max_tokens: int,
) -> tuple[torch.Tensor, int]:
    """Scores of documents cut into `max_length // window` windows of `window` tokens.

    Returns ([n_queries, n_docs] scores, the number of window vectors indexed).
    A document's score is its best window's: the index holds one vector per
    window, so it is up to `max_length // window` times the size of a dense one.
    """
    tokenize = data.Tokenize(tokenizer, window)
    per_doc = max(1, max_length // window)
    bare = tokenizer(
        doc_texts, add_special_tokens=False, truncation=True, max_length=per_doc * tokenize.budget
    )["input_ids"]
    window_ids, owner = [], []
    for doc, ids in enumerate(bare):
        cut = windows(ids, tokenize)
        window_ids += cut
        owner += [doc] * len(cut)
    w_reps = encode(encoder, window_ids, max_tokens, "windows")  # [n_windows, hidden]

    window_scores = q_reps @ w_reps.T  # [n_queries, n_windows]
    owner_index = torch.tensor(owner).expand_as(window_scores)
    scores = torch.full((len(q_reps), len(doc_texts)), -math.inf)
    return scores.scatter_reduce(1, owner_index, window_scores, "amax"), len(window_ids)


def bm25_scores(doc_texts: list[str], query_texts: list[str]) -> torch.Tensor:
    """[n_queries, n_docs] BM25 scores (bm25s defaults: Lucene's formula, k1 1.5, b 0.75).

    Lower-cased word tokens with English stop words removed, no stemming; a
    query of stop words only scores 0 everywhere (bm25s itself fails on it).
    """
    import bm25s

    retriever = bm25s.BM25()
    corpus = bm25s.tokenize(doc_texts, stopwords="en", show_progress=False)
    scores = torch.zeros(len(query_texts), len(doc_texts), dtype=torch.float64)
    if not any(corpus.ids):
        return scores  # no document has a word to index (bm25s fails on it)
    retriever.index(corpus, show_progress=False)
    queries = bm25s.tokenize(query_texts, stopwords="en", return_ids=False, show_progress=False)
    for row, tokens in enumerate(queries):
        if tokens:
            scores[row] = torch.from_numpy(retriever.get_scores(tokens))
    return scores  # [n_queries, n_docs]


def top_documents(
    scores: torch.Tensor, qids: list[str], dids: list[str], top_k: int
) -> metrics.Run:
    """Each query's top_k documents by score, plus any tied with the last one kept.

    Keeping the ties matters: trec_eval breaks them by doc id, so cutting
    inside a tie would change which document it ranks first.
    """
    scores = scores.double()  # [n_queries, n_docs]
    k = min(top_k, len(dids))
    thresholds = scores.topk(k, dim=1).values[:, -1:]  # [n_queries, 1]
    run = {}
    for row, qid in enumerate(qids):
        keep = (scores[row] >= thresholds[row]).nonzero().flatten().tolist()
        run[qid] = {dids[i]: scores[row, i].item() for i in keep}
    return run


def _shuffled(ids) -> list[str]:
    """`ids` in a fixed pseudo-random order: by a hash of each id, the same on every machine."""
    return sorted(ids, key=lambda i: hashlib.sha1(i.encode()).digest())


def sample_queries(qids: list[str], max_queries: int) -> list[str]:
    """`max_queries` of the query ids (all for 0), a fixed pseudo-random sample, sorted."""
    return sorted(_shuffled(qids)[: max_queries or None])


def sample_corpus(dids: list[str], qrels: metrics.Qrels, max_docs: int) -> list[str]:
    """The documents judged for `qrels`, then others in a fixed pseudo-random order.

    Keeps corpus order. With `max_docs` 0, or not below the corpus size, every
    document is kept; judged documents are all kept even past `max_docs`.
    """
    if not max_docs or max_docs >= len(dids):
        return dids
    judged = {d for docs in qrels.values() for d in docs}
    others = _shuffled(d for d in dids if d not in judged)
    keep = judged | set(others[: max(0, max_docs - len(judged))])
    return [d for d in dids if d in keep]


def token_counts(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[int]:
    """Untruncated length of each text in tokens, special tokens included."""
    tokenize = data.Tokenize(tokenizer, 8)
    specials = len(tokenize.prefix) + len(tokenize.suffix)
    bare = tokenizer(texts, add_special_tokens=False, verbose=False)["input_ids"]
    return [len(ids) + specials for ids in bare]


def length_bucket(tokens: int) -> str:
    return next(name for bound, name in LENGTH_BUCKETS if tokens <= bound)


def query_buckets(qrels: metrics.Qrels, doc_tokens: Mapping[str, int]) -> dict[str, str]:
    """Each query's length bucket: that of its longest relevant document."""
    return {
        qid: length_bucket(max(doc_tokens[d] for d, grade in docs.items() if grade > 0))
        for qid, docs in qrels.items()
        if any(grade > 0 for grade in docs.values())
    }


def length_stats(doc_tokens: list[int]) -> dict[str, int]:
    """Median and 90th percentile (nearest rank) of document lengths in tokens."""
    ordered = sorted(doc_tokens)
    p90 = ordered[math.ceil(0.9 * len(ordered)) - 1]
    return {"doc_tokens_median": round(statistics.median(ordered)), "doc_tokens_p90": p90}

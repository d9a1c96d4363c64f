"""Tiny random encoders built from a config, so tests need no downloaded weights."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch
from transformers import AutoModel, AutoTokenizer, BertConfig, RobertaConfig

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from model import Encoder, default_model_path  # noqa: E402


def tiny_config(kind: str = "bert", dropout: float = 0.0, positions: int = 64):
    common = dict(
        vocab_size=30522,  # the real tokenizer's vocabulary, so saved dirs load end to end
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=64,
        hidden_dropout_prob=dropout,
        attention_probs_dropout_prob=dropout,
    )
    if kind == "roberta":
        # RoBERTa counts positions from pad_token_id + 1: its table has 2 extra rows
        return RobertaConfig(**common, max_position_embeddings=positions + 2, pad_token_id=1)
    return BertConfig(**common, max_position_embeddings=positions)


def tiny_backbone(kind: str = "bert", dropout: float = 0.0, positions: int = 64, seed: int = 0):
    torch.manual_seed(seed)
    config = tiny_config(kind, dropout, positions)
    return AutoModel.from_config(config, attn_implementation="sdpa").float()


def tiny_encoder(dropout: float = 0.0, pooling: str = "mean", seed: int = 0) -> Encoder:
    return Encoder(tiny_backbone(dropout=dropout, seed=seed), pooling=pooling)


@pytest.fixture
def one_thread():
    """Run torch on one thread: with the 2 CPU cores shared, tiny models run ~10x faster so."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


def save_tiny_model(path: Path, tokenizer, dropout: float = 0.0) -> Path:
    """A tiny BERT (64 positions) saved with the real MiniLM tokenizer, like any checkpoint."""
    tiny_backbone(dropout=dropout, positions=64).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path


@pytest.fixture
def tiny_model_dir(tmp_path, tokenizer) -> Path:
    return save_tiny_model(tmp_path / "tiny-bert", tokenizer)


TOPICS = [
    (
        "how to sort a list",
        "Sorting puts the items of a list in ascending order by comparing keys.",
    ),
    (
        "open a network socket",
        "A socket is an endpoint for sending and receiving data on a network.",
    ),
    ("parse a date string", "Date parsing turns text such as 2024-01-31 into a calendar value."),
    ("compress files", "Compression shrinks files by encoding repeated patterns once."),
    ("hash a password", "Password hashing stores a slow one-way digest instead of the secret."),
    ("read a csv file", "Comma separated values hold one record per line, fields split by commas."),
    ("send an email", "Mail is handed to a server that relays the message to its recipient."),
    ("schedule a task", "A scheduler runs jobs at set times, such as every night at two."),
]


@pytest.fixture
def train_file(tmp_path) -> Path:
    """The TOPICS as training pairs with ids p0..p7, documents tripled."""
    path = tmp_path / "train.jsonl"
    rows = [{"query": q, "positive": d * 3, "id": f"p{i}"} for i, (q, d) in enumerate(TOPICS)]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return path

"""Tiny random encoders built from a config, so tests need no downloaded weights."""

from __future__ import annotations

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


@pytest.fixture(scope="session")
def tokenizer():
    return AutoTokenizer.from_pretrained(default_model_path())


@pytest.fixture
def tiny_model_dir(tmp_path, tokenizer) -> Path:
    """A saved tiny BERT with the real MiniLM tokenizer, loadable like any checkpoint."""
    path = tmp_path / "tiny-bert"
    tiny_backbone(positions=64).save_pretrained(path)
    tokenizer.save_pretrained(path)
    return path

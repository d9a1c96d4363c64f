"""Position extension, pooling, saving and the loss."""

from __future__ import annotations

import json
import warnings

import pytest
import torch
from transformers import AutoModel, AutoTokenizer
from transformers.utils import logging as hf_logging

from model import Encoder, extend_positions, info_nce_loss, load_encoder, native_length
from tests.conftest import tiny_backbone


def ids(length: int, seed: int = 0) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    input_ids = torch.randint(1000, 30000, (2, length), generator=generator)
    return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}


@pytest.mark.parametrize("kind", ["bert", "roberta"])
@pytest.mark.parametrize("method", ["copy", "interpolate"])
def test_extension_updates_every_length_dependent_piece(kind, method, tokenizer):
    model = tiny_backbone(kind, positions=64)
    offset = 2 if kind == "roberta" else 0
    old = model.embeddings.position_embeddings.weight.detach().clone()

    assert extend_positions(model, tokenizer, 8192, method)

    table = model.embeddings.position_embeddings
    assert table.num_embeddings == 8192 + offset
    assert model.config.max_position_embeddings == 8192 + offset
    assert model.embeddings.position_ids.shape == (1, 8192 + offset)
    assert torch.equal(model.embeddings.position_ids[0, -3:], torch.arange(8189, 8192) + offset)
    assert model.embeddings.token_type_ids.shape == (1, 8192 + offset)
    assert tokenizer.model_max_length == 8192
    assert native_length(model) == 8192
    # rows before position 0 (RoBERTa's padding rows) are kept as they were
    assert torch.equal(table.weight[:offset], old[:offset])
    # the table's ends are the pretrained ends
    assert torch.allclose(table.weight[offset], old[offset])
    if method == "copy":
        assert torch.equal(table.weight[offset : offset + 64], old[offset:])
        assert torch.equal(table.weight[offset + 64 : offset + 128], old[offset:])
    else:
        assert torch.allclose(table.weight[-1], old[-1], atol=1e-6)
        assert not torch.allclose(table.weight[offset + 1], old[offset + 1])


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_forward_at_8192_without_token_type_ids(kind, tokenizer):
    model = tiny_backbone(kind, positions=64).eval()
    extend_positions(model, tokenizer, 8192, "copy")
    batch = ids(8192)
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    assert hidden.shape == (2, 8192, 32)
    assert torch.isfinite(hidden).all()


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_copy_leaves_short_texts_unchanged(kind, tokenizer):
    model = tiny_backbone(kind, positions=64).eval()
    batch = ids(60)
    with torch.no_grad():
        before = Encoder(model)(**batch)
        extend_positions(model, tokenizer, 1024, "copy")
        after = Encoder(model)(**batch)
    assert torch.equal(before, after)


def test_interpolate_moves_short_texts(tokenizer):
    # negative control for the test above: interpolation does change positions 0..63
    model = tiny_backbone(positions=64).eval()
    batch = ids(60)
    with torch.no_grad():
        before = Encoder(model)(**batch)
        extend_positions(model, tokenizer, 1024, "interpolate")
        after = Encoder(model)(**batch)
    assert not torch.allclose(before, after, atol=1e-4)


def test_long_enough_model_is_left_alone(tokenizer):
    model = tiny_backbone(positions=64)
    weight = model.embeddings.position_embeddings.weight
    assert not extend_positions(model, tokenizer, 64, "copy")
    assert model.embeddings.position_embeddings.weight is weight
    assert model.config.max_position_embeddings == 64


def test_unknown_method_is_an_error(tokenizer):
    with pytest.raises(ValueError, match="extend_method"):
        extend_positions(tiny_backbone(), tokenizer, 128, "stretch")


@pytest.mark.parametrize("kind", ["bert", "roberta"])
def test_save_and_reload_at_the_new_length(kind, tmp_path, tokenizer):
    model = tiny_backbone(kind, positions=64).eval()
    extend_positions(model, tokenizer, 2048, "copy")
    encoder = Encoder(model, pooling="cls", normalize=False)
    encoder.save_pretrained(tmp_path / "out", tokenizer)

    messages = []
    handler = _capture(messages)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        reloaded = AutoModel.from_pretrained(tmp_path / "out").eval()
    hf_logging.get_logger("transformers").removeHandler(handler)
    text = " ".join(messages + [str(w.message) for w in caught]).lower()
    for worry in ("load report", "newly initialized", "mismatch", "not used", "missing"):
        assert worry not in text

    offset = 2 if kind == "roberta" else 0
    assert reloaded.config.max_position_embeddings == 2048 + offset
    assert reloaded.embeddings.position_ids.shape == (1, 2048 + offset)
    assert AutoTokenizer.from_pretrained(tmp_path / "out").model_max_length == 2048
    config = json.loads((tmp_path / "out" / "tokenizer_config.json").read_text())
    assert config["model_max_length"] == 2048

    batch = ids(1500)
    with torch.no_grad():
        torch.testing.assert_close(Encoder(reloaded, "cls", False)(**batch), encoder(**batch))


def _capture(messages: list[str]):
    import logging

    class Handler(logging.Handler):
        def emit(self, record):
            messages.append(record.getMessage())

    handler = Handler(logging.DEBUG)
    hf_logging.get_logger("transformers").addHandler(handler)
    return handler


def test_load_encoder_recovers_pooling_from_saved_directory(tiny_model_dir, tmp_path):
    encoder, tokenizer = load_encoder(str(tiny_model_dir), 256, pooling="cls", normalize=False)
    encoder.save_pretrained(tmp_path / "saved", tokenizer)
    reloaded, _ = load_encoder(str(tmp_path / "saved"), 256)
    assert (reloaded.pooling, reloaded.normalize) == ("cls", False)
    assert native_length(reloaded.backbone) == 256


def test_mean_pooling_ignores_padding():
    encoder = Encoder(tiny_backbone().eval(), pooling="mean")
    batch = ids(10)
    padded = {
        "input_ids": torch.cat([batch["input_ids"], torch.zeros(2, 5, dtype=torch.long)], 1),
        "attention_mask": torch.cat(
            [batch["attention_mask"], torch.zeros(2, 5, dtype=torch.long)], 1
        ),
    }
    with torch.no_grad():
        torch.testing.assert_close(encoder(**padded), encoder(**batch), atol=1e-6, rtol=0)
        reps = encoder(**batch)
    torch.testing.assert_close(reps.norm(dim=-1), torch.ones(2))


def test_info_nce_matches_hand_computation():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]])
    # query 0: scores (1, 0.6, 0) / 0.5 -> -log(e^2 / (e^2 + e^1.2 + e^0))
    # query 1: scores (0, 0.8, 1) / 0.5, positive is doc 1 -> -log(e^1.6 / (1 + e^1.6 + e^2))
    e = torch.exp
    expected = (
        -(
            torch.log(e(torch.tensor(2.0)) / (e(torch.tensor(2.0)) + e(torch.tensor(1.2)) + 1))
            + torch.log(e(torch.tensor(1.6)) / (1 + e(torch.tensor(1.6)) + e(torch.tensor(2.0))))
        )
        / 2
    )
    torch.testing.assert_close(info_nce_loss(q, d, temperature=0.5), expected)


def test_false_negative_mask_removes_a_duplicate_from_the_denominator():
    q = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    d = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 0.0]])  # doc 2 duplicates doc 0
    mask = torch.tensor([[False, False, True], [False, False, False]])
    masked = info_nce_loss(q, d, mask, temperature=0.5)
    unmasked = info_nce_loss(q, d, None, temperature=0.5)
    without_duplicate = info_nce_loss(q, d[:2], None, temperature=0.5)
    # query 1 still sees doc 2 as a negative, so compare query 0's share only
    assert masked < unmasked
    assert masked > without_duplicate - 1  # finite, not -inf
    q0 = info_nce_loss(q[:1], d[:2], None, temperature=0.5)
    q1 = info_nce_loss(q[1:], d[[1, 0, 2]], None, temperature=0.5)
    torch.testing.assert_close(masked, (q0 + q1) / 2)

"""GradCache against the plain step: same loss, same gradients, dropout replayed exactly."""

from __future__ import annotations

import random

import pytest
import torch

from data import Batch
from efficient_train import (
    EfficientTrainingArguments,
    RandomState,
    embed_without_grad,
    grad_cache_step,
    reforward,
)
from origin_train import plain_step
from tests.conftest import tiny_encoder


def random_batch(n: int, seed: int, negatives: int = 0) -> Batch:
    """n pairs of random token ids with uneven lengths, so chunks pad differently."""
    rng = random.Random(seed)

    def text(low, high):
        return [101] + [rng.randrange(1000, 30000) for _ in range(rng.randint(low, high))] + [102]

    queries = [text(3, 10) for _ in range(n)]
    docs = [text(10, 40) for _ in range(n + negatives)]
    false_negatives = torch.zeros(n, n + negatives, dtype=torch.bool)
    return Batch(queries, docs, false_negatives, [str(i) for i in range(n)])


def gradients(step, batches, mini_batch_size=4, seed=0, dropout=0.0):
    """Loss values and every parameter gradient after `step` over `batches` (accumulated)."""
    encoder = tiny_encoder(dropout=dropout, seed=seed)
    encoder.train()
    args = EfficientTrainingArguments(
        per_device_train_batch_size=len(batches[0]), mini_batch_size=mini_batch_size
    )
    losses = [step(encoder, b, args, 1.0 / len(batches)) for b in batches]
    grads = {n: p.grad.clone() for n, p in encoder.named_parameters() if p.grad is not None}
    return losses, grads


def assert_same(reference, candidate, atol=1e-5):
    ref_losses, ref_grads = reference
    losses, grads = candidate
    assert losses == pytest.approx(ref_losses, abs=atol)
    assert ref_grads.keys() == grads.keys()
    assert len(grads) > 20  # every encoder layer took part
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=atol, rtol=1e-5, msg=name)


@pytest.mark.parametrize(
    "mini_batch_size", [4, 3, 8], ids=["divides-batch", "uneven-last-chunk", "equals-batch"]
)
def test_grad_cache_matches_plain_step(mini_batch_size):
    batches = [random_batch(8, seed=1, negatives=2)]
    reference = gradients(plain_step, batches)
    assert_same(reference, gradients(grad_cache_step, batches, mini_batch_size))


def test_grad_cache_matches_plain_step_with_accumulation():
    batches = [random_batch(6, seed=1), random_batch(6, seed=2)]
    reference = gradients(plain_step, batches)
    assert_same(reference, gradients(grad_cache_step, batches, mini_batch_size=4))


def test_false_negatives_are_masked_the_same_way():
    batch = random_batch(6, seed=3)
    batch.docs[4] = list(batch.docs[1])  # a duplicate document
    batch.false_negatives[1, 4] = batch.false_negatives[4, 1] = True
    reference = gradients(plain_step, [batch])
    assert_same(reference, gradients(grad_cache_step, [batch], mini_batch_size=4))


def test_negative_control_different_data_differs():
    reference = gradients(plain_step, [random_batch(8, seed=1)])
    other = gradients(grad_cache_step, [random_batch(8, seed=99)], mini_batch_size=4)
    with pytest.raises(AssertionError):
        assert_same(reference, other)


def test_replayed_forward_reproduces_cached_representations():
    encoder = tiny_encoder(dropout=0.1)
    encoder.train()
    chunk = random_batch(4, seed=5).docs
    cached, (state,) = embed_without_grad(encoder, [chunk])

    replayed = reforward(encoder, chunk, state)
    torch.testing.assert_close(replayed, cached, atol=1e-6, rtol=0)

    # negative control: without the saved state, dropout draws new masks
    fresh = reforward(encoder, chunk, None)
    assert (fresh - cached).abs().max() > 1e-3


def test_replay_does_not_rewind_the_random_stream():
    before = torch.get_rng_state()
    state = RandomState(torch.device("cpu"))
    torch.rand(3)
    after = torch.get_rng_state()
    with state.replay():
        torch.rand(3)
    assert torch.equal(torch.get_rng_state(), after)
    assert not torch.equal(before, after)


def test_replay_off_changes_gradients_with_dropout():
    batch = [random_batch(8, seed=1)]
    args = EfficientTrainingArguments(per_device_train_batch_size=8, mini_batch_size=4)

    def run(replay):
        torch.manual_seed(7)
        encoder = tiny_encoder(dropout=0.1, seed=0)
        encoder.train()
        grad_cache_step(encoder, batch[0], args, 1.0, replay=replay)
        return encoder.backbone.embeddings.word_embeddings.weight.grad.clone()

    torch.testing.assert_close(run(True), run(True))
    assert (run(True) - run(False)).abs().max() > 1e-6

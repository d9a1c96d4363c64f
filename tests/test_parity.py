"""GradCache against the plain step: same loss, same gradients, dropout replayed exactly."""

from __future__ import annotations

import random

import pytest
import torch

from data import Batch
from efficient_train import (
    EfficientTrainingArguments,
    RandomState,
    chunk_sizes,
    first_pass,
    grad_cache_step,
    plan_chunks,
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


def gradients(step, batches, mini_batch_size=4, seed=0, dropout=0.0, **options):
    """Loss values and every parameter gradient after `step` over `batches` (accumulated).

    options: further EfficientTrainingArguments (mini_batch_tokens, group_by_length, ...).
    """
    encoder = tiny_encoder(dropout=dropout, seed=seed)
    encoder.train()
    args = EfficientTrainingArguments(
        per_device_train_batch_size=len(batches[0]), mini_batch_size=mini_batch_size, **options
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


@pytest.mark.parametrize("group_by_length", [True, False], ids=["grouped", "batch-order"])
@pytest.mark.parametrize(
    "mini_batch_size", [4, 3, 8], ids=["divides-batch", "uneven-last-chunk", "equals-batch"]
)
def test_grad_cache_matches_plain_step(mini_batch_size, group_by_length):
    batches = [random_batch(8, seed=1, negatives=2)]
    reference = gradients(plain_step, batches)
    candidate = gradients(
        grad_cache_step, batches, mini_batch_size, group_by_length=group_by_length
    )
    assert_same(reference, candidate)


@pytest.mark.parametrize("budget", [60, 1], ids=["budget", "each-text-alone"])
def test_token_budget_matches_plain_step(budget):
    # 8 queries of 5-12 tokens fit 60 as one chunk; 10 documents of 12-42 tokens need several
    batches = [random_batch(8, seed=1, negatives=2)]
    reference = gradients(plain_step, batches)
    candidate = gradients(grad_cache_step, batches, mini_batch_size=64, mini_batch_tokens=budget)
    assert_same(reference, candidate)


def test_one_chunk_is_the_plain_step_even_with_dropout():
    # no extra pass and no reordering: the same random draws in the same order as the plain step
    batches = [random_batch(8, seed=1, negatives=2)]
    torch.manual_seed(3)
    reference = gradients(plain_step, batches, dropout=0.1)
    torch.manual_seed(3)
    candidate = gradients(grad_cache_step, batches, mini_batch_size=10, dropout=0.1)
    assert_same(reference, candidate, atol=1e-6)


def count_calls(module_of, mini_batch_size: int, **options) -> int:
    """How often the module `module_of(encoder)` runs in one step on a batch of 8 pairs."""
    encoder = tiny_encoder()
    encoder.train()
    calls = []
    module_of(encoder).register_forward_hook(lambda *_: calls.append(1))
    args = EfficientTrainingArguments(
        per_device_train_batch_size=8, mini_batch_size=mini_batch_size, **options
    )
    grad_cache_step(encoder, random_batch(8, seed=1), args, 1.0)
    return len(calls)


def whole(encoder):
    return encoder


def test_only_sides_in_several_chunks_pay_the_extra_pass():
    assert count_calls(whole, 8) == 2  # the plain step: queries once, documents once
    assert count_calls(whole, 4) == 8  # 2 query + 2 document chunks, each forwarded twice
    # queries (5-12 tokens) fit 96 tokens in one chunk, documents (12-42) do not
    budget = EfficientTrainingArguments(mini_batch_size=8, mini_batch_tokens=96)
    doc_chunks = len(plan_chunks(random_batch(8, seed=1).docs, budget).pieces)
    assert doc_chunks > 1
    assert count_calls(whole, 8, mini_batch_tokens=96) == 1 + 2 * doc_chunks


def test_gradient_checkpointing_recomputes_layers_in_backward():
    def attention(encoder):
        return encoder.backbone.encoder.layer[0].attention

    assert count_calls(attention, 8) == 2
    assert count_calls(attention, 8, gradient_checkpointing=True) == 4


def test_chunk_sizes_respect_both_limits():
    assert chunk_sizes([5, 5, 5, 5, 5], max_texts=2) == [2, 2, 1]
    # padded size is texts x longest: 3 x 10 = 30 fits, a fourth would make 40
    assert chunk_sizes([10, 9, 8, 7, 2, 2], max_texts=99, max_tokens=30) == [3, 3]
    # a text over the budget is a chunk of its own; a longer newcomer re-prices the chunk
    assert chunk_sizes([50, 3, 3, 20], max_texts=99, max_tokens=30) == [1, 2, 1]
    assert chunk_sizes([4, 4, 4], max_texts=2, max_tokens=100) == [2, 1]


def test_grouping_sorts_longest_first_and_keeps_every_text():
    seqs = [[1] * n for n in (3, 9, 1, 7, 5)]
    args = EfficientTrainingArguments(mini_batch_size=2)
    chunks = plan_chunks(seqs, args)
    assert chunks.order == [1, 3, 4, 0, 2]
    assert [[len(s) for s in piece] for piece in chunks.pieces] == [[9, 7], [5, 3], [1]]
    assert chunks.padded_tokens() == 2 * 9 + 2 * 5 + 1
    ungrouped = plan_chunks(
        seqs, EfficientTrainingArguments(mini_batch_size=2, group_by_length=False)
    )
    assert ungrouped.padded_tokens() == 2 * 9 + 2 * 7 + 5 > chunks.padded_tokens()
    # one chunk pads the same in any order, so it keeps the batch order
    assert plan_chunks(seqs, EfficientTrainingArguments(mini_batch_size=5)).order == [0, 1, 2, 3, 4]


def test_gradient_checkpointing_matches_plain_step():
    batches = [random_batch(8, seed=1, negatives=2)]
    reference = gradients(plain_step, batches)
    assert_same(reference, gradients(grad_cache_step, batches, gradient_checkpointing=True))


def test_gradient_checkpointing_replays_the_same_dropout():
    # checkpointing recomputes each layer in backward: its dropout masks must be the first pass's
    batches = [random_batch(8, seed=1, negatives=2)]
    torch.manual_seed(5)
    reference = gradients(grad_cache_step, batches, dropout=0.1)
    torch.manual_seed(5)
    candidate = gradients(grad_cache_step, batches, dropout=0.1, gradient_checkpointing=True)
    assert_same(reference, candidate, atol=1e-6)


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
    chunks = plan_chunks(
        random_batch(4, seed=5).docs, EfficientTrainingArguments(mini_batch_size=2)
    )
    cached, states = first_pass(encoder, chunks)  # [4, hidden] in batch order
    first_rows = cached[chunks.order[:2]]

    replayed = reforward(encoder, chunks.pieces[0], states[0])
    torch.testing.assert_close(replayed, first_rows, atol=1e-6, rtol=0)

    # negative control: without the saved state, dropout draws new masks
    fresh = reforward(encoder, chunks.pieces[0], None)
    assert (fresh - first_rows).abs().max() > 1e-3


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

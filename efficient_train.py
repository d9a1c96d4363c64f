"""Contrastive training with a hand-written GradCache step: big batches, bounded memory.

The loss couples every query with every document of the batch, so the batch
cannot simply be split. GradCache splits the *encoder* work instead:

1. embed the whole batch without gradients, in chunks, remembering the
   random state each chunk started from;
2. compute InfoNCE over the full batch on those detached representations and
   keep d loss / d representation;
3. re-forward each chunk with gradients, replaying its random state so the
   dropout masks match step 1, and back-propagate the cached gradient.

Only one chunk's activations are alive at a time, so memory is set by the
chunk (`mini_batch_size` texts, at most `mini_batch_tokens` padded tokens),
not by the batch; the price is one extra forward pass. Three things cut that
price without changing the update:

- each side's texts are sorted by length before they are cut into chunks, so
  a chunk pads to a length close to its members' (`group_by_length`);
- a side (queries or documents) that fits in one chunk skips the extra pass:
  it is forwarded once, with its graph, as in the plain step;
- a token budget lets short texts share a chunk that long ones could not.

With dropout off the update equals origin_train.py's (tests/test_parity.py).

    python efficient_train.py                           # default model and RFC data
    python efficient_train.py --per_device_train_batch_size 64 --mini_batch_size 4
    python efficient_train.py --mini_batch_size 64 --mini_batch_tokens 8192
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from data import Batch
from distributed import gather_reps
from model import Encoder, info_nce_loss
from trainer import (
    BATCH_HELP,
    ArgumentError,
    TrainingArguments,
    main_guard,
    parse_args,
    train,
)


@dataclass
class EfficientTrainingArguments(TrainingArguments):
    # the defaults see the same 256 pairs as origin_train.py's, in 8 steps of 4x the batch;
    # the learning rate doubles, as usual when the batch grows (square-root scaling)
    per_device_train_batch_size: int = field(default=32, metadata={"help": BATCH_HELP})
    max_steps: int = field(
        default=8,
        metadata={
            "help": "Optimiser steps; -1 means num_train_epochs epochs. The default (8 x 32 = 256 "
            "pairs) keeps a default run to minutes on a 2-core CPU."
        },
    )
    learning_rate: float = field(default=1e-4, metadata={"help": "Peak learning rate."})
    mini_batch_size: int = field(
        default=8,
        metadata={
            "help": "Most texts per encoder forward (the GradCache chunk); sets peak memory. "
            "Need not divide the batch."
        },
    )
    mini_batch_tokens: int = field(
        default=0,
        metadata={
            "help": "Most padded tokens per chunk (texts x longest member), on top of "
            "--mini_batch_size: memory then follows the budget, not the texts' lengths, and "
            "short texts share a chunk (raise --mini_batch_size to let them). A text longer "
            "than the budget is a chunk alone. 0: no token limit."
        },
    )
    group_by_length: bool = field(
        default=True,
        metadata={
            "help": "Sort texts by length before cutting chunks, so each pads less. "
            "The batch, its negatives and its gradients are unchanged."
        },
    )
    gradient_checkpointing: bool = field(
        default=False,
        metadata={
            "help": "Keep only each layer's input inside a chunk and recompute the rest in "
            "backward: about a third more compute, for when one chunk's activations do not "
            "fit even at --mini_batch_size 1 (long texts, big models)."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.mini_batch_size < 1:
            raise ArgumentError(f"--mini_batch_size must be at least 1, got {self.mini_batch_size}")
        if self.mini_batch_tokens < 0:
            raise ArgumentError(f"--mini_batch_tokens must be >= 0, got {self.mini_batch_tokens}")


# TODO(bf16): no bf16 autocast. On the 2-core AVX2 CPU we develop on (no AVX512-BF16 or AMX)
# it made a MiniLM forward+backward of 4 x 256 tokens 7x slower (20.1 s vs 2.8 s) and a
# no-grad forward 3x slower (4.0 s vs 1.4 s); it is unmeasured on GPUs, where it should help.


class RandomState:
    """The CPU (and CUDA) generator state at one moment, to replay dropout exactly."""

    def __init__(self, device: torch.device):
        self.devices = [device] if device.type == "cuda" else []
        self.cpu = torch.get_rng_state()
        self.cuda = [torch.cuda.get_rng_state(d) for d in self.devices]

    @contextmanager
    def replay(self):
        # fork_rng restores the outer state on exit, so replaying does not
        # rewind the random stream of the rest of training
        with torch.random.fork_rng(devices=self.devices):
            torch.set_rng_state(self.cpu)
            for device, state in zip(self.devices, self.cuda, strict=True):
                torch.cuda.set_rng_state(state, device)
            yield


@dataclass
class Chunks:
    """One side of a batch (its queries or its documents) cut into encoder forwards.

    order: the batch index of each text, in the order the chunks hold them;
    pieces: the chunks, each a list of token id lists.
    """

    order: list[int]
    pieces: list[list[list[int]]]

    @property
    def cached(self) -> bool:
        """Several chunks need GradCache; one is cheaper forwarded once, with its graph."""
        return len(self.pieces) > 1

    def padded_tokens(self) -> int:
        """Tokens one pass over the chunks feeds the encoder, padding included."""
        return sum(len(piece) * max(map(len, piece)) for piece in self.pieces)


def chunk_sizes(lengths: list[int], max_texts: int, max_tokens: int = 0) -> list[int]:
    """Sizes of the chunks a greedy cut makes of texts with `lengths`, kept in their order.

    A chunk closes before it would hold more than `max_texts` texts or, when
    `max_tokens` > 0, more than `max_tokens` padded tokens (texts x longest);
    a text over the budget on its own still gets a chunk.
    """
    sizes, count, longest = [], 0, 0
    for length in lengths:
        grown = max(longest, length)
        full = count == max_texts or (max_tokens > 0 and (count + 1) * grown > max_tokens)
        if count and full:
            sizes.append(count)
            count, grown = 0, length
        count, longest = count + 1, grown
    return sizes + [count] if count else sizes


def plan_chunks(seqs: list[list[int]], args: EfficientTrainingArguments) -> Chunks:
    """Cut one side of the batch into chunks, longest texts first when grouping by length."""
    order = list(range(len(seqs)))
    if args.group_by_length:
        # longest first: the first chunk is the biggest, so running out of memory shows at once
        order.sort(key=lambda i: len(seqs[i]), reverse=True)
    sizes = chunk_sizes([len(seqs[i]) for i in order], args.mini_batch_size, args.mini_batch_tokens)
    if len(sizes) == 1:
        # one chunk pads the same in any order; batch order keeps its dropout masks the plain step's
        order = list(range(len(seqs)))
    pieces, start = [], 0
    for size in sizes:
        pieces.append([seqs[i] for i in order[start : start + size]])
        start += size
    return Chunks(order, pieces)


def unpermute(reps: torch.Tensor, order: list[int]) -> torch.Tensor:
    """Rows in chunk order -> rows in batch order (row k of `reps` is text order[k])."""
    out = torch.empty_like(reps)
    out[torch.tensor(order, device=reps.device)] = reps
    return out


def first_pass(encoder: Encoder, chunks: Chunks) -> tuple[torch.Tensor, list[RandomState]]:
    """Step 1: [n, hidden] representations in batch order, and each chunk's random state.

    A cached side is embedded without a graph and its states are kept for the
    replay; a one-chunk side is forwarded with its graph (no states needed).
    """
    if not chunks.cached:
        return encoder.embed(chunks.pieces[0]), []
    with torch.no_grad():
        device = next(encoder.parameters()).device
        reps, states = [], []
        for piece in chunks.pieces:
            states.append(RandomState(device))
            reps.append(encoder.embed(piece))
    return unpermute(torch.cat(reps), chunks.order), states


def representation_grads(
    q_reps: torch.Tensor,
    d_reps: torch.Tensor,
    batch: Batch,
    temperature: float,
    loss_scale: float,
) -> tuple[float, torch.Tensor | None, torch.Tensor | None]:
    """Step 2: back-propagate the full-batch loss; returns it and d loss / d reps of cached sides.

    Representations with a graph (a side forwarded in one chunk) pass the
    gradient straight on into the encoder, and their entry is None; detached
    ones (cached sides) stop it, and their [n, hidden] gradient is returned.
    Under torchrun the loss covers the global batch (distributed.gather_reps).
    """
    q_leaf = q_reps if q_reps.requires_grad else q_reps.detach().requires_grad_()
    d_leaf = d_reps if d_reps.requires_grad else d_reps.detach().requires_grad_()
    with torch.enable_grad():
        all_q, all_d = gather_reps(q_leaf, d_leaf, batch)  # only our rows take gradients
        false_negatives = batch.false_negatives.to(all_q.device)
        loss = info_nce_loss(all_q, all_d, false_negatives, temperature)
        (loss * loss_scale).backward()
    q_grads = None if q_reps.requires_grad else q_leaf.grad
    d_grads = None if d_reps.requires_grad else d_leaf.grad
    return loss.item(), q_grads, d_grads


def backward_chunks(
    encoder: Encoder,
    chunks: Chunks,
    states: list[RandomState],
    grads: torch.Tensor,
    replay: bool = True,
) -> None:
    """Step 3: re-forward each chunk with gradients and push its cached gradient in.

    grads: [n, hidden] in batch order.
    """
    grads = grads[torch.tensor(chunks.order, device=grads.device)]  # chunk order
    offset = 0
    for piece, state in zip(chunks.pieces, states, strict=True):
        reps = reforward(encoder, piece, state if replay else None)  # [len(piece), hidden]
        # <reps, cached grad> has exactly the cached gradient w.r.t. reps
        reps.backward(grads[offset : offset + len(piece)])
        offset += len(piece)


def reforward(encoder: Encoder, chunk: list[list[int]], state: RandomState | None) -> torch.Tensor:
    """Forward one chunk with gradients, under `state`'s dropout masks when given."""
    if state is None:
        return encoder.embed(chunk)
    with state.replay():
        return encoder.embed(chunk)


def enable_checkpointing(encoder: Encoder) -> None:
    """Turn on the backbone's per-layer activation checkpointing (once; later calls return).

    Dropout stays exact: torch's checkpoint saves the random state at each
    layer and restores it for the recompute, inside a replay or not.
    """
    backbone = encoder.backbone
    if any(getattr(module, "gradient_checkpointing", False) for module in backbone.modules()):
        return
    if hasattr(backbone, "activation_checkpointing_enable"):
        backbone.activation_checkpointing_enable()  # non-reentrant by default
    else:
        # the name before transformers deprecated it
        backbone.gradient_checkpointing_enable({"use_reentrant": False})


def grad_cache_step(
    encoder: Encoder,
    batch: Batch,
    args: EfficientTrainingArguments,
    loss_scale: float,
    replay: bool = True,
) -> float:
    """One contrastive batch in chunks (see the module docstring); returns the loss."""
    if args.gradient_checkpointing:
        # the shared loop in trainer.py builds the model, so the step applies its own option
        enable_checkpointing(encoder)
    q_chunks = plan_chunks(batch.queries, args)
    d_chunks = plan_chunks(batch.docs, args)

    # 1. the whole batch embedded: without a graph for sides in several chunks
    q_reps, q_states = first_pass(encoder, q_chunks)
    d_reps, d_states = first_pass(encoder, d_chunks)

    # 2. loss over every query-document pair; gradients stop at cached representations
    loss, q_grads, d_grads = representation_grads(
        q_reps, d_reps, batch, args.temperature, loss_scale
    )

    # 3. chunk by chunk, the encoder's share of the cached gradients
    if q_chunks.cached:
        backward_chunks(encoder, q_chunks, q_states, q_grads, replay)
    if d_chunks.cached:
        backward_chunks(encoder, d_chunks, d_states, d_grads, replay)
    return loss


def chunking_banner(args: EfficientTrainingArguments) -> str:
    budget = f", at most {args.mini_batch_tokens} tokens" if args.mini_batch_tokens else ""
    grouped = ", grouped by length" if args.group_by_length else ""
    return f" | mini batch {args.mini_batch_size}{budget}{grouped}"


def main(argv: list[str] | None = None):
    args = parse_args(EfficientTrainingArguments, argv, default_output="output/efficient_train")
    return train(args, grad_cache_step, extra_banner=chunking_banner(args))


if __name__ == "__main__":
    main_guard(main)

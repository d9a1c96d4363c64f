"""Contrastive training with a hand-written GradCache step: big batches, bounded memory.

The loss couples every query with every document of the batch, so the batch
cannot simply be split. GradCache splits the *encoder* work instead:

1. embed the whole batch without gradients, in chunks of `mini_batch_size`,
   remembering the random state each chunk started from;
2. compute InfoNCE over the full batch on those detached representations and
   keep d loss / d representation;
3. re-forward each chunk with gradients, replaying its random state so the
   dropout masks match step 1, and back-propagate the cached gradient.

Only one chunk's activations are alive at a time, so memory is set by
`mini_batch_size`, not by the batch; the price is one extra forward pass.
With dropout off the update equals origin_train.py's (tests/test_parity.py).

    python efficient_train.py                           # default model and RFC data
    python efficient_train.py --per_device_train_batch_size 64 --mini_batch_size 4
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field

import torch

from data import Batch
from model import Encoder, info_nce_loss
from trainer import (
    BATCH_HELP,
    ArgumentError,
    TrainingArguments,
    main_guard,
    pad_to,
    parse_args,
    train,
)


@dataclass
class EfficientTrainingArguments(TrainingArguments):
    per_device_train_batch_size: int = field(default=32, metadata={"help": BATCH_HELP})
    mini_batch_size: int = field(
        default=4,
        metadata={
            "help": "Texts per encoder forward (the GradCache chunk); sets peak memory. "
            "Need not divide the batch."
        },
    )

    def __post_init__(self):
        super().__post_init__()
        if self.mini_batch_size < 1:
            raise ArgumentError(f"--mini_batch_size must be at least 1, got {self.mini_batch_size}")


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


def chunked(seqs: list[list[int]], size: int) -> list[list[list[int]]]:
    return [seqs[i : i + size] for i in range(0, len(seqs), size)]


@torch.no_grad()
def embed_without_grad(
    encoder: Encoder, chunks: list[list[list[int]]]
) -> tuple[torch.Tensor, list[RandomState]]:
    """Step 1: [n, hidden] representations of all chunks, and each chunk's random state."""
    device = next(encoder.parameters()).device
    reps, states = [], []
    for chunk in chunks:
        states.append(RandomState(device))
        reps.append(encoder(**pad_to(chunk, encoder)))
    return torch.cat(reps), states


def representation_grads(
    q_reps: torch.Tensor,
    d_reps: torch.Tensor,
    false_negatives: torch.Tensor,
    temperature: float,
    loss_scale: float,
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """Step 2: the full-batch loss and its gradient w.r.t. each (detached) representation."""
    q_reps = q_reps.detach().requires_grad_()
    d_reps = d_reps.detach().requires_grad_()
    with torch.enable_grad():
        loss = info_nce_loss(q_reps, d_reps, false_negatives.to(q_reps.device), temperature)
        q_grads, d_grads = torch.autograd.grad(loss * loss_scale, [q_reps, d_reps])
    return loss.item(), q_grads, d_grads


def backward_chunks(
    encoder: Encoder,
    chunks: list[list[list[int]]],
    states: list[RandomState],
    grads: torch.Tensor,
    replay: bool = True,
) -> None:
    """Step 3: re-forward each chunk with gradients and push its cached gradient in."""
    offset = 0
    for chunk, state in zip(chunks, states, strict=True):
        reps = reforward(encoder, chunk, state if replay else None)  # [len(chunk), hidden]
        # <reps, cached grad> has exactly the cached gradient w.r.t. reps
        reps.backward(grads[offset : offset + len(chunk)])
        offset += len(chunk)


def reforward(encoder: Encoder, chunk: list[list[int]], state: RandomState | None) -> torch.Tensor:
    """Forward one chunk with gradients, under `state`'s dropout masks when given."""
    if state is None:
        return encoder(**pad_to(chunk, encoder))
    with state.replay():
        return encoder(**pad_to(chunk, encoder))


def grad_cache_step(
    encoder: Encoder,
    batch: Batch,
    args: EfficientTrainingArguments,
    loss_scale: float,
    replay: bool = True,
) -> float:
    """One contrastive batch in chunks of `args.mini_batch_size`; returns the loss."""
    q_chunks = chunked(batch.queries, args.mini_batch_size)
    d_chunks = chunked(batch.docs, args.mini_batch_size)

    # 1. the whole batch, embedded without keeping any graph
    q_reps, q_states = embed_without_grad(encoder, q_chunks)
    d_reps, d_states = embed_without_grad(encoder, d_chunks)

    # 2. loss over every query-document pair, gradient w.r.t. representations
    loss, q_grads, d_grads = representation_grads(
        q_reps, d_reps, batch.false_negatives, args.temperature, loss_scale
    )

    # 3. chunk by chunk, the encoder's share of those gradients
    backward_chunks(encoder, q_chunks, q_states, q_grads, replay)
    backward_chunks(encoder, d_chunks, d_states, d_grads, replay)
    return loss


def main(argv: list[str] | None = None):
    args = parse_args(EfficientTrainingArguments, argv, default_output="output/efficient_train")
    return train(args, grad_cache_step, extra_banner=f" | mini batch {args.mini_batch_size}")


if __name__ == "__main__":
    main_guard(main)

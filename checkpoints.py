"""Checkpoints that a kill at any moment cannot corrupt, and resuming from them.

output_dir/checkpoint-N holds all that step N + 1 needs:

- the model and tokenizer, as a model directory eval.py can score as it is;
- training_state.pt: optimiser, schedule, step, data position (see
  `data.BatchSampler`) and the random states (python, numpy, torch CPU and
  CUDA) of every process;
- training_args.json: the arguments of the run that wrote it.

A checkpoint is assembled in output_dir/.partial-* and renamed into place, so
checkpoint-N is complete or absent, never half written; retired checkpoints
are renamed into a .partial-* directory before they are deleted, for the same
reason. Whatever .partial-* a kill leaves behind is removed when the next run
starts. Renames are atomic against a killed process; the files are fsynced
before the rename, so the same holds after a power cut on filesystems that
order metadata after data (ext4's default).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import tempfile
from pathlib import Path

import numpy as np
import torch
from transformers import PreTrainedTokenizerBase

from model import Encoder

PREFIX = "checkpoint-"
PARTIAL = ".partial-"
STATE_FILE = "training_state.pt"
ARGS_FILE = "training_args.json"
LAST = "last"


class CheckpointError(ValueError):
    """A checkpoint that is missing or does not belong to this run."""


def checkpoint_step(path: Path) -> int:
    return int(path.name[len(PREFIX) :])


def list_checkpoints(output_dir: Path) -> list[Path]:
    """Complete checkpoints in `output_dir`, oldest first."""
    if not output_dir.is_dir():
        return []
    found = [
        path
        for path in output_dir.glob(f"{PREFIX}*")
        if path.name[len(PREFIX) :].isdigit() and (path / STATE_FILE).is_file()
    ]
    return sorted(found, key=checkpoint_step)


def resolve(spec: str, output_dir: Path) -> Path | None:
    """The checkpoint `--resume_from_checkpoint spec` names: None for "", the newest for "last"."""
    if not spec:
        return None
    if spec == LAST:
        found = list_checkpoints(output_dir)
        if not found:
            raise CheckpointError(f"--resume_from_checkpoint last: no checkpoint in {output_dir}")
        return found[-1]
    path = Path(spec)
    if not (path / STATE_FILE).is_file():
        raise CheckpointError(f"--resume_from_checkpoint {spec}: no {STATE_FILE} there")
    return path


def read_args(path: Path) -> dict:
    """A training_args.json as a dict; unreadable is an error naming the file."""
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CheckpointError(f"{path}: unreadable ({err})") from None
    if not isinstance(saved, dict):
        raise CheckpointError(f"{path}: expected a JSON object of arguments")
    return saved


def write_text(path: Path, text: str) -> None:
    """Replace a file by a rename, so a reader (or a kill) never sees half of it."""
    staging = path.with_name(f"{PARTIAL}{path.name}")
    staging.write_text(text)
    os.replace(staging, path)


def write_json(path: Path, obj) -> None:
    write_text(path, json.dumps(obj, indent=2) + "\n")


def random_states() -> dict:
    """Every random state training draws from, in a form `torch.load(weights_only=True)` reads."""
    name, keys, position, has_gauss, gauss = np.random.get_state()
    return {
        "python": random.getstate(),
        "numpy": (name, torch.from_numpy(keys.astype(np.int64)), position, has_gauss, gauss),
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_random_states(states: dict) -> None:
    version, internal, gauss = states["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, position, has_gauss, cached = states["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), position, has_gauss, cached))
    torch.set_rng_state(states["torch"])
    if states["cuda"]:
        torch.cuda.set_rng_state_all(states["cuda"])


def save(
    output_dir: Path,
    step: int,
    encoder: Encoder,
    tokenizer: PreTrainedTokenizerBase,
    state: dict,
    args: dict,
) -> Path:
    """Write output_dir/checkpoint-`step` whole, replacing one of that name; returns its path."""
    partial = Path(tempfile.mkdtemp(prefix=PARTIAL, dir=output_dir))
    staged = partial / f"{PREFIX}{step}"
    encoder.save_pretrained(staged, tokenizer)
    torch.save(state, staged / STATE_FILE)
    (staged / ARGS_FILE).write_text(json.dumps(args, indent=2) + "\n")
    _fsync_tree(staged)

    target = output_dir / staged.name
    if target.exists():
        # resumed from an older checkpoint and back at this step: retire the old one first
        os.replace(target, partial / "retired")
    os.replace(staged, target)
    _fsync_dir(output_dir)
    shutil.rmtree(partial)
    return target


def rotate(output_dir: Path, keep: int) -> None:
    """Delete all but the newest `keep` checkpoints (keep 0: delete none)."""
    if keep:
        for path in list_checkpoints(output_dir)[:-keep]:
            delete(path)


def delete(path: Path) -> None:
    """Remove a checkpoint by renaming it out of sight first: no half-deleted checkpoint-N."""
    partial = Path(tempfile.mkdtemp(prefix=PARTIAL, dir=path.parent))
    os.replace(path, partial / path.name)
    shutil.rmtree(partial)


def remove_partial(output_dir: Path) -> None:
    """Delete what interrupted saves left behind."""
    for path in output_dir.glob(f"{PARTIAL}*"):
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()


def _fsync_tree(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                os.fsync(f.fileno())
    for path in [directory, *(p for p in directory.rglob("*") if p.is_dir())]:
        _fsync_dir(path)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)

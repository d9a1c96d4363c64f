"""Checkpoints and resume: a run killed with SIGKILL and resumed ends as if never stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import checkpoints
import efficient_train
import origin_train
from tests.conftest import save_tiny_model
from tests.test_scripts import train_args
from trainer import ArgumentError

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")
SCRIPTS = {
    "origin": (origin_train, "plain_step"),
    "efficient": (efficient_train, "grad_cache_step"),
}
# the script under test, SIGKILLing itself as the first step after `kill_at` exists is
# about to run: a real kill mid-run, at a point that does not depend on timing
KILLED_RUN = """
import os, signal, sys
sys.path.insert(0, {repo!r})
import {module} as script

step = script.{step}


def killing_step(*args):
    if os.path.exists({kill_at!r}):
        os.kill(os.getpid(), signal.SIGKILL)
    return step(*args)


script.{step} = killing_step
script.main(sys.argv[1:])
"""


@pytest.fixture
def dropout_model_dir(tmp_path, tokenizer) -> Path:
    return save_tiny_model(tmp_path / "tiny-bert-dropout", tokenizer, dropout=0.1)


def run_argv(script, model_dir, train_file, output_dir, *extra):
    # 8 pairs in batches of 4: 6 steps cross two epoch boundaries; a checkpoint every step
    argv = train_args(model_dir, train_file, output_dir, "--max_steps", "6", "--save_steps", "1")
    argv += ["--save_total_limit", "2", "--warmup_ratio", "0.3", *extra]
    return argv + (["--mini_batch_size", "3"] if script == "efficient" else [])


def start_killed_run(script: str, argv: list[str], kill_at: Path) -> subprocess.Popen:
    module, step = SCRIPTS[script]
    code = KILLED_RUN.format(
        repo=str(REPO), module=module.__name__, step=step, kill_at=str(kill_at)
    )
    return subprocess.Popen(
        [sys.executable, "-c", code, *argv],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env={**os.environ, "OMP_NUM_THREADS": "1"},  # as in-process runs (see one_thread)
    )


def wait_killed(process: subprocess.Popen, timeout: float = 240) -> None:
    try:
        _, stderr = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        pytest.fail(f"the run was not killed within {timeout} s")
    if process.returncode != -signal.SIGKILL:
        pytest.fail(f"the run ended with {process.returncode}, not SIGKILL: {stderr.decode()}")


def log_steps(output_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (output_dir / "log.jsonl").read_text().splitlines()]


def test_killed_run_resumes_to_the_same_weights(dropout_model_dir, train_file, tmp_path):
    # both trainers' runs start at once, so their interpreters load side by side
    killed = {}
    for script in SCRIPTS:
        out = tmp_path / f"{script}-killed"
        argv = run_argv(script, dropout_model_dir, train_file, out)
        killed[script] = (out, start_killed_run(script, argv, out / "checkpoint-2"))
    for out, process in killed.values():
        wait_killed(process)
        assert (out / "checkpoint-2").is_dir()
        assert not (out / "model.safetensors").exists()  # it really stopped mid-way

    for script, (out, _) in killed.items():
        module, _ = SCRIPTS[script]
        reference = tmp_path / f"{script}-whole"
        module.main(run_argv(script, dropout_model_dir, train_file, reference))
        module.main(
            run_argv(script, dropout_model_dir, train_file, out, "--resume_from_checkpoint", "last")
        )

        whole = load_file(reference / "model.safetensors")
        resumed = load_file(out / "model.safetensors")
        for name, weight in whole.items():
            torch.testing.assert_close(resumed[name], weight, atol=1e-6, rtol=0, msg=name)
        # each step logged once, with the loss the uninterrupted run had
        assert [r["step"] for r in log_steps(out)] == [1, 2, 3, 4, 5, 6]
        for got, expected in zip(log_steps(out), log_steps(reference), strict=True):
            assert got["loss"] == pytest.approx(expected["loss"], abs=1e-6)
        # --save_total_limit 2: the newest two; no checkpoint of the final step
        assert [p.name for p in checkpoints.list_checkpoints(out)] == [
            "checkpoint-4",
            "checkpoint-5",
        ]
        assert not list(out.glob(f"{checkpoints.PARTIAL}*"))


def test_negative_control_resume_without_random_states_differs(
    dropout_model_dir, train_file, tmp_path, monkeypatch
):
    # dropout on: a resume that drew fresh masks would not end on the same weights
    argv = run_argv("origin", dropout_model_dir, train_file, tmp_path / "a", "--max_steps", "3")
    origin_train.main(argv)
    resumed = tmp_path / "b"
    origin_train.main(
        run_argv("origin", dropout_model_dir, train_file, resumed, "--max_steps", "3")
    )
    monkeypatch.setattr(checkpoints, "restore_random_states", lambda states: None)
    origin_train.main(
        run_argv(
            "origin", dropout_model_dir, train_file, resumed, "--max_steps", "3",
            "--resume_from_checkpoint", str(resumed / "checkpoint-1"),
        )
    )  # fmt: skip
    a = load_file(tmp_path / "a" / "model.safetensors")
    b = load_file(resumed / "model.safetensors")
    assert max((a[n] - b[n]).abs().max().item() for n in a) > 1e-6


def test_last_ignores_unfinished_checkpoints(tmp_path):
    (tmp_path / "checkpoint-3").mkdir()
    (tmp_path / "checkpoint-3" / checkpoints.STATE_FILE).touch()
    (tmp_path / "checkpoint-10").mkdir()  # no training state: not a checkpoint
    (tmp_path / ".partial-x" / "checkpoint-12").mkdir(parents=True)  # a kill mid-save
    assert checkpoints.resolve("last", tmp_path) == tmp_path / "checkpoint-3"
    checkpoints.remove_partial(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint-10", "checkpoint-3"]


def test_resume_and_output_dir_mistakes_fail_before_any_work(tiny_model_dir, train_file, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(checkpoints.CheckpointError, match="no checkpoint in"):
        origin_train.main(
            train_args(tiny_model_dir, train_file, out, "--resume_from_checkpoint", "last")
        )
    with pytest.raises(checkpoints.CheckpointError, match="no training_state.pt"):
        origin_train.main(
            train_args(tiny_model_dir, train_file, out, "--resume_from_checkpoint", str(tmp_path))
        )
    assert not out.exists()

    origin_train.main(train_args(tiny_model_dir, train_file, out, "--save_steps", "1"))
    # forgetting --resume_from_checkpoint would silently throw the checkpoints away
    with pytest.raises(ArgumentError, match="holds checkpoints up to checkpoint-2"):
        origin_train.main(train_args(tiny_model_dir, train_file, out, "--save_steps", "1"))
    with pytest.raises(ArgumentError, match=r"holds another run \(learning_rate 0.001 -> 0.01"):
        origin_train.main(
            train_args(tiny_model_dir, train_file, out, "--learning_rate", "1e-2",
                       "--resume_from_checkpoint", "last")
        )  # fmt: skip
    with pytest.raises(ArgumentError, match="drop --resume_from_checkpoint"):
        origin_train.main(
            train_args(tiny_model_dir, train_file, out, "--overwrite_output_dir",
                       "--resume_from_checkpoint", "last")
        )  # fmt: skip
    with pytest.raises(checkpoints.CheckpointError, match="is another run's: max_steps 3 -> 4"):
        origin_train.main(
            train_args(tiny_model_dir, train_file, tmp_path / "other", "--max_steps", "4",
                       "--resume_from_checkpoint", str(out / "checkpoint-2"))
        )  # fmt: skip
    assert not (tmp_path / "other").exists()

    # overwriting starts a new run: the old checkpoints go, the log restarts
    origin_train.main(
        train_args(tiny_model_dir, train_file, out, "--max_steps", "2", "--overwrite_output_dir")
    )
    assert checkpoints.list_checkpoints(out) == []
    assert [r["step"] for r in log_steps(out)] == [1, 2]
    assert json.loads((out / "training_args.json").read_text())["max_steps"] == 2

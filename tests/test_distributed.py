"""torchrun with 2 gloo processes on CPU: the same update as one process with the whole batch."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

import checkpoints
import efficient_train
import origin_train
from tests.conftest import TOPICS

REPO = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.usefixtures("one_thread")
# each worker trains with both trainers, so the processes start (and import torch) once; it
# holds the process group itself because joining one anew after leaving it can hang in gloo
WORKER = """
import json, sys
sys.path.insert(0, {repo!r})
import torch.distributed as dist
import efficient_train, origin_train

runs = json.loads(sys.argv[1])
dist.init_process_group("gloo")  # from torchrun's environment, as distributed.setup would
origin_train.main(runs["origin"])
efficient_train.main(runs["efficient"])
dist.destroy_process_group()
"""


@pytest.fixture
def negatives_file(tmp_path) -> Path:
    """The TOPICS, every third with a hard negative: processes' shares differ in documents."""
    rows = []
    for i, (query, doc) in enumerate(TOPICS):
        negatives = {"negatives": [f"unrelated text number {i}"]} if i % 3 == 0 else {}
        rows.append({"query": query, "positive": doc, "id": f"p{i}", **negatives})
    path = tmp_path / "train.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def run_argv(model_dir, train_file, output_dir, batch_size, *extra):
    return [
        "--model_name_or_path", str(model_dir),
        "--train_file", str(train_file),
        "--output_dir", str(output_dir),
        "--max_length", "64",
        "--query_max_length", "16",
        "--per_device_train_batch_size", str(batch_size),
        "--max_steps", "3",
        # plain SGD, unclipped: the update is proportional to the gradient, so a gradient of
        # the wrong scale (a mean over processes, not the sum) would show; Adam would hide it
        "--optim", "sgd",
        "--max_grad_norm", "0",
        "--learning_rate", "0.1",
        *extra,
    ]  # fmt: skip


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def torchrun(script: Path, processes: int, *args: str) -> str:
    """Run `script` under torchrun on this machine only; returns its output."""
    command = [
        sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(processes),
        "--master_addr", "127.0.0.1", "--master_port", str(free_port()), str(script), *args,
    ]  # fmt: skip
    # gloo binds the loopback interface: nothing leaves the machine
    env = {**os.environ, "OMP_NUM_THREADS": "1", "GLOO_SOCKET_IFNAME": "lo"}
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done.stdout


def test_two_processes_make_the_one_process_update(tiny_model_dir, negatives_file, tmp_path):
    # origin: 2 x 3 of 8 pairs leaves 2 out of every epoch; efficient: 2 x 2 in chunks of 1
    runs = {
        "origin": ("origin", origin_train, 3, ["--save_steps", "2"]),
        "efficient": ("efficient", efficient_train, 2, ["--mini_batch_size", "1"]),
    }
    argv = {
        name: run_argv(tiny_model_dir, negatives_file, tmp_path / f"{name}-2", batch, *extra)
        for name, (_, _, batch, extra) in runs.items()
    }
    script = tmp_path / "worker.py"
    script.write_text(WORKER.format(repo=str(REPO)))
    output = torchrun(script, 2, json.dumps(argv))
    assert "2 left out of each epoch" in output
    assert "per-device batch 3 | world size 2 | grad accumulation 1 | effective batch 6" in output
    assert "world size 2 | grad accumulation 1 | effective batch 4" in output

    for name, (_, module, batch, extra) in runs.items():
        single = tmp_path / f"{name}-1"
        module.main(run_argv(tiny_model_dir, negatives_file, single, 2 * batch, *extra))
        one, two = (
            load_file(single / "model.safetensors"),
            load_file(tmp_path / f"{name}-2" / "model.safetensors"),
        )
        for weight in one:
            torch.testing.assert_close(two[weight], one[weight], atol=1e-5, rtol=0, msg=weight)
        # rank 0 alone logged: each step once, with the one-process loss
        logs = [
            [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
            for out in (single, tmp_path / f"{name}-2")
        ]
        assert [r["step"] for r in logs[1]] == [1, 2, 3]
        for a, b in zip(*logs, strict=True):
            assert b["loss"] == pytest.approx(a["loss"], abs=1e-5)

    # the checkpoint keeps both processes' random states; one process cannot take it over
    checkpoint = tmp_path / "origin-2" / "checkpoint-2"
    state = torch.load(checkpoint / checkpoints.STATE_FILE, weights_only=True)
    assert len(state["random"]) == 2
    with pytest.raises(checkpoints.CheckpointError, match="saved by 2 processes, resumed by 1"):
        origin_train.main(
            run_argv(tiny_model_dir, negatives_file, tmp_path / "origin-2", 3, "--save_steps", "2",
                     "--resume_from_checkpoint", str(checkpoint))
        )  # fmt: skip

"""A NaN or infinite loss or gradient stops training, names the step and examples, saves nothing."""

from __future__ import annotations

import json
import math

import pytest

import checkpoints
import origin_train
from tests.test_resume import log_steps
from tests.test_scripts import train_args
from trainer import NonFiniteError, TrainingArguments, main_guard, parse_args, train

pytestmark = pytest.mark.usefixtures("one_thread")


def poisoned(at_call: int, poison):
    """The plain step, with `poison(encoder, loss) -> loss` applied on call number `at_call`."""
    calls, plain_step = [], origin_train.plain_step

    def step(encoder, batch, args, loss_scale):
        calls.append(batch.ids)
        loss = plain_step(encoder, batch, args, loss_scale)
        return poison(encoder, loss) if len(calls) == at_call else loss

    return step, calls


def nan_loss(encoder, loss):
    return math.nan


def inf_gradient(encoder, loss):
    encoder.backbone.embeddings.word_embeddings.weight.grad[0, 0] = math.inf
    return loss


@pytest.mark.parametrize(
    "poison, max_grad_norm, message",
    [
        (nan_loss, "1.0", "loss nan"),
        (inf_gradient, "1.0", "gradient norm inf"),
        (inf_gradient, "0", "gradient norm inf"),  # no clipping: the norm is still checked
    ],
)
def test_non_finite_step_stops_before_saving_it(
    poison, max_grad_norm, message, tiny_model_dir, train_file, tmp_path
):
    out = tmp_path / "out"
    argv = train_args(tiny_model_dir, train_file, out, "--max_steps", "5", "--save_steps", "1")
    args = parse_args(TrainingArguments, argv + ["--max_grad_norm", max_grad_norm], "unused")
    step, calls = poisoned(3, poison)
    with pytest.raises(NonFiniteError) as caught:
        train(args, step)

    bad_ids = ", ".join(calls[2])
    assert str(caught.value).startswith(f"step 3: {message} on examples {bad_ids};")
    # the last good step's checkpoint is the newest; no final model, no log of the bad step
    assert [p.name for p in checkpoints.list_checkpoints(out)] == ["checkpoint-1", "checkpoint-2"]
    assert not (out / "model.safetensors").exists()
    assert [r["step"] for r in log_steps(out)] == [1, 2]
    assert json.loads((out / "training_args.json").read_text())["max_steps"] == 5


def test_non_finite_step_is_a_one_line_error(tiny_model_dir, train_file, tmp_path, monkeypatch):
    step, _ = poisoned(1, nan_loss)
    monkeypatch.setattr(origin_train, "plain_step", step)
    argv = train_args(tiny_model_dir, train_file, tmp_path / "out")
    with pytest.raises(SystemExit) as caught:
        main_guard(lambda: origin_train.main(argv))
    assert str(caught.value).startswith("error: step 1: loss nan on examples p")
    assert "\n" not in str(caught.value)


def test_the_poisoned_step_is_otherwise_the_plain_step(tiny_model_dir, train_file, tmp_path):
    # negative control: poisoning a call that never comes changes nothing
    step, _ = poisoned(99, nan_loss)
    argv = train_args(tiny_model_dir, train_file, tmp_path / "a")
    train(parse_args(TrainingArguments, argv, "unused"), step)
    origin_train.main(train_args(tiny_model_dir, train_file, tmp_path / "b"))
    losses = [[r["loss"] for r in log_steps(tmp_path / d)] for d in "ab"]
    assert losses[0] == losses[1] and all(map(math.isfinite, losses[0]))

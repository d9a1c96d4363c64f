"""Arguments from flags or a JSON / YAML file: every typo is an error, values convert alike."""

from __future__ import annotations

import json
import sys

import pytest

import efficient_train
import trainer
from data import DataError
from efficient_train import EfficientTrainingArguments
from trainer import ArgumentError, TrainingArguments, parse_args


def parse(argv, cls=TrainingArguments):
    return parse_args(cls, argv, default_output="unused")


def write_config(path, text_by_suffix):
    path.write_text(text_by_suffix[path.suffix])
    return str(path)


@pytest.mark.parametrize("suffix", [".json", ".yaml"])
def test_config_file_values_convert_as_on_the_command_line(tmp_path, suffix):
    config = write_config(
        tmp_path / f"config{suffix}",
        {
            # YAML reads 1e-3 as a string and "false" quoted is a string in both
            ".yaml": 'learning_rate: 1e-3\nnormalize: "false"\nmax_steps: -1\npooling: cls\n',
            ".json": '{"learning_rate": "1e-3", "normalize": "false", "max_steps": -1, '
            '"pooling": "cls"}',
        },
    )
    args = parse([config])
    assert args.learning_rate == 0.001 and args.normalize is False
    assert args.max_steps == -1 and args.pooling == "cls"
    # flags after the file override it
    assert parse([config, "--pooling", "mean", "--normalize", "true"]).pooling == "mean"
    native = tmp_path / "native.json"  # JSON's own booleans and numbers
    native.write_text('{"normalize": false, "learning_rate": 2e-05, "warmup_ratio": 0}')
    args = parse([str(native)])
    assert (args.normalize, args.learning_rate, args.warmup_ratio) == (False, 2e-05, 0.0)


@pytest.mark.parametrize("suffix", [".json", ".yaml", ".yml"])
def test_unknown_config_keys_are_errors(tmp_path, suffix):
    config = tmp_path / f"config{suffix}"
    config.write_text(json.dumps({"max_steps": 3, "lerning_rate": 1e-3}))  # JSON is YAML too
    with pytest.raises(ArgumentError, match=r"unknown key 'lerning_rate' \(did you mean 'lea"):
        parse([str(config)])


def test_config_file_problems_are_reported_with_the_file(tmp_path):
    with pytest.raises(ArgumentError, match=r"absent\.yaml: no such file"):
        parse([str(tmp_path / "absent.yaml")])
    bad = tmp_path / "bad.json"
    bad.write_text('{"max_steps": 3,}')
    with pytest.raises(ArgumentError, match=r"bad\.json: not valid JSON"):
        parse([str(bad)])
    bad = tmp_path / "bad.yaml"
    bad.write_text("- max_steps\n")
    with pytest.raises(ArgumentError, match=r"bad\.yaml: expected a mapping"):
        parse([str(bad)])
    bad.write_text("max_steps: [1, 2]\n")
    with pytest.raises(ArgumentError, match=r"max_steps must be a single value"):
        parse([str(bad)])


def test_efficient_arguments_come_from_a_config_file_too(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("mini_batch_size: 2\nper_device_train_batch_size: 64\n")
    args = parse([str(config)], EfficientTrainingArguments)
    assert (args.mini_batch_size, args.per_device_train_batch_size) == (2, 64)
    with pytest.raises(ArgumentError, match="unknown key 'mini_batch_size'"):
        parse([str(config)])  # origin_train has no mini batch


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--lerning_rate", "1e-3"], r"unknown argument '--lerning_rate' \(did you mean 'lea"),
        (["--learning_rat", "1e-3"], "unknown argument '--learning_rat'"),  # no prefix matching
        (["train.jsonl"], "unknown argument 'train.jsonl'"),
    ],
)
def test_command_line_typos_are_errors(argv, message):
    with pytest.raises(ArgumentError, match=message):
        parse(argv)


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--normalize", "false"], False),
        (["--normalize", "False"], False),
        (["--normalize", "no"], False),
        (["--normalize=0"], False),
        (["--no_normalize"], False),
        (["--normalize", "true"], True),
        (["--normalize"], True),
        ([], True),
    ],
)
def test_bool_flags_read_as_people_write_them(argv, expected):
    assert parse(argv).normalize is expected


def test_a_bool_flag_refuses_other_words(capsys):
    with pytest.raises(SystemExit):
        parse(["--normalize", "maybe"])
    assert "Truthy value expected" in capsys.readouterr().err


def test_report_to_tensorboard_without_it_fails_before_any_work(tmp_path, monkeypatch):
    # whether or not tensorboard is installed here, make its import fail
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    with pytest.raises(ArgumentError, match="pip install tensorboard"):
        efficient_train.main(["--output_dir", str(tmp_path), "--report_to", "tensorboard"])
    with pytest.raises(ArgumentError, match="report_to must be one of"):
        efficient_train.main(["--output_dir", str(tmp_path), "--report_to", "wandb"])
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--max_length", "40000"], "past the 32768 tokens"),
        (["--learning_rate", "0"], "learning_rate must be positive"),
        (["--max_grad_norm", "-1"], "max_grad_norm must be >= 0"),
        (["--save_total_limit", "2"], "save_total_limit needs --save_steps"),
        (["--model_name_or_path", "no/such/dir"], "not a local directory"),
    ],
)
def test_inconsistent_arguments_fail_before_any_work(argv, message, tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ArgumentError, match=message):
        efficient_train.main(["--output_dir", str(out), *argv])
    assert not out.exists()


def test_bad_data_fails_before_the_model_loads(tmp_path, monkeypatch):
    bad = tmp_path / "train.jsonl"
    bad.write_text('{"query": "q", "positive": "d"}\n{"query": "q"}\n')
    monkeypatch.setattr(trainer, "load_encoder", lambda *a: pytest.fail("the model loaded"))
    with pytest.raises(DataError, match=r"train\.jsonl:2: missing field 'positive'"):
        efficient_train.main(["--output_dir", str(tmp_path / "out"), "--train_file", str(bad)])
    assert not (tmp_path / "out").exists()

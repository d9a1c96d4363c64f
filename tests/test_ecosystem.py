"""A trained directory works outside longcl: sentence-transformers, transformers, its card.

A tiny BERT with 64 positions is trained for two steps at 128 tokens, once
with mean pooling and normalisation and once with CLS pooling and raw dot
products; every other way of loading the result must give our embeddings.
"""

from __future__ import annotations

import json
import re
import shutil

import pytest
import torch
from transformers import AutoModel, AutoTokenizer

import card
import eval as eval_script
import origin_train
from data import Tokenize, pad
from model import load_encoder, saved_pooling
from tests.conftest import save_tiny_model
from tests.test_scripts import TOPICS, train_args, write_beir

VARIANTS = {"mean": [], "cls": ["--pooling", "cls", "--normalize", "false"]}
# the second text is cut at 128 tokens, the model's length, on every path
TEXTS = ["how to sort a list", "a long document " * 60, "ab"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory, tokenizer):
    """{variant: output directory} of the two training runs, shared by this module's tests."""
    root = tmp_path_factory.mktemp("ecosystem")
    base = save_tiny_model(root / "tiny-bert", tokenizer)
    train_file = root / "train.csv"  # a CSV with its own column names, as users bring
    lines = ["question,answer"] + [f'"{q}","{d * 3}"' for q, d in TOPICS]
    train_file.write_text("\n".join(lines) + "\n")
    columns = ["--query_column", "question", "--positive_column", "answer"]
    outputs = {}
    for variant, extra in VARIANTS.items():
        outputs[variant] = root / variant
        origin_train.main(
            train_args(base, train_file, outputs[variant], "--max_steps", "2", *columns, *extra)
        )
    return outputs


def our_embeddings(directory, texts=TEXTS) -> torch.Tensor:
    """What eval.py computes: load_encoder, Tokenize to the model's length, pad, encode."""
    encoder, tokenizer = load_encoder(str(directory), 0)
    ids, _ = Tokenize(tokenizer, 128)(texts)
    with torch.no_grad():
        return encoder.eval()(**pad(ids, tokenizer.pad_token_id))


@pytest.mark.parametrize("variant", VARIANTS)
def test_sentence_transformers_gives_our_embeddings(trained, variant):
    from sentence_transformers import SentenceTransformer

    model = SentenceTransformer(str(trained[variant]), device="cpu")
    assert model.max_seq_length == 128  # the extended length, not the tokenizer's old 512
    theirs = model.encode(TEXTS, convert_to_tensor=True)
    ours = our_embeddings(trained[variant])
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    norms = ours.norm(dim=-1)
    if variant == "mean":
        assert model.similarity_fn_name == "cosine"
        torch.testing.assert_close(norms, torch.ones(len(TEXTS)))
    else:
        assert model.similarity_fn_name == "dot"  # the loss scored raw dot products
        assert not torch.allclose(norms, torch.ones(len(TEXTS)), atol=1e-3)
    assert AutoModel.from_pretrained(trained[variant]).config.max_position_embeddings == 128


@pytest.mark.parametrize("variant", VARIANTS)
def test_card_describes_the_run_and_its_snippets_give_our_embeddings(trained, variant):
    directory = trained[variant]
    text = (directory / "README.md").read_text()
    final_loss = json.loads((directory / "log.jsonl").read_text().splitlines()[-1])["loss"]
    for expected in [
        "library_name: sentence-transformers",
        f"**Base model**: `{directory.parent / 'tiny-bert'}`",
        "extended from 64 to 128 tokens by `copy`",
        f"`{directory.parent / 'train.csv'}`, 8 pairs",
        "4 per device, gradient accumulation 1: effective 4",
        "learning rate 0.001, 2 steps",
        "temperature 0.05",
        "mean, L2-normalised" if variant == "mean" else "cls, not normalised",
        f"**Final loss**: {final_loss:.4f}",
        "Not evaluated yet",
    ]:
        assert expected in text

    snippets = re.findall(r"```python\n(.*?)```", text, flags=re.S)
    assert len(snippets) == 2  # sentence-transformers, then transformers alone
    ours = our_embeddings(directory, ["a query", "a long document"])
    for snippet in snippets:
        namespace = {}
        exec(snippet, namespace)
        torch.testing.assert_close(namespace["embeddings"], ours, atol=1e-5, rtol=1e-5)


def copy_as_plain_transformers(directory, target):
    """The model and tokenizer alone, without any sentence-transformers file."""
    AutoModel.from_pretrained(directory).save_pretrained(target)
    AutoTokenizer.from_pretrained(directory).save_pretrained(target)
    return target


@pytest.mark.parametrize("variant", VARIANTS)
def test_eval_takes_plain_and_sentence_transformers_directories(trained, variant, tmp_path):
    from sentence_transformers import SentenceTransformer

    beir = write_beir(tmp_path / "beir")
    ours = shutil.copytree(trained[variant], tmp_path / "ours")  # eval.py writes to its card
    plain = copy_as_plain_transformers(ours, tmp_path / "plain")
    resaved = tmp_path / "resaved"  # sentence-transformers 6 writes its own config format
    SentenceTransformer(str(ours), device="cpu").save(str(resaved))
    assert saved_pooling(resaved) == saved_pooling(ours)

    def evaluate(directory, *flags):
        argv = ["--model_name_or_path", str(directory), "--data_dir", str(beir)]
        return eval_script.main([*argv, "--run_file", str(tmp_path / "run.trec"), *flags])

    reference = evaluate(ours)
    # a plain directory says nothing about pooling: mean and normalised unless told
    flags = ["--pooling", "cls", "--normalize", "false"] if variant == "cls" else []
    for result in [evaluate(resaved), evaluate(plain, *flags)]:
        assert result["pooling"] == variant and result["normalize"] == (variant == "mean")
        for name in card.METRICS:
            assert result[name] == pytest.approx(reference[name], abs=1e-9)
    assert evaluate(plain)["pooling"] == "mean"


def test_eval_keeps_one_card_row_per_setting(trained, tmp_path):
    directory = shutil.copytree(trained["mean"], tmp_path / "model")
    summary = (directory / "README.md").read_text().split(card.EVAL_MARKER)[0]
    beir = write_beir(tmp_path / "beir")
    argv = ["--model_name_or_path", str(directory), "--data_dir", str(beir)]
    argv += ["--run_file", str(tmp_path / "run.trec")]
    first = eval_script.main(argv)
    eval_script.main([*argv, "--max_length", "96"])
    eval_script.main(argv)  # the same setting again replaces its row

    text = (directory / "README.md").read_text()
    assert text.startswith(summary) and "Not evaluated yet" not in text
    rows = [line for line in text.split(card.EVAL_MARKER)[1].splitlines() if line.startswith("|")]
    assert rows[0].startswith("| data | split | max_length | queries | recall@1 |")
    assert [row.split(" | ")[2] for row in rows[2:]] == ["128", "96"]
    assert f"| {beir} | test | 128 | 8 | {first['recall@1']:.4f} |" in rows[2]
    assert not list(directory.glob(".README.md*"))  # no staging file left behind


def test_cards_not_written_by_the_trainer_are_left_alone(tmp_path):
    (tmp_path / "README.md").write_text("# someone else's model\n")
    result = {"data_dir": "d", "split": "test", "max_length": 8, "num_queries": 1}
    result.update(dict.fromkeys(card.METRICS, 0.5))
    assert card.add_evaluation(tmp_path, result) is None
    assert (tmp_path / "README.md").read_text() == "# someone else's model\n"
    assert card.add_evaluation(tmp_path / "no-card-here", result) is None


def test_layouts_encoder_cannot_reproduce_are_refused(trained, tmp_path):
    directory = shutil.copytree(trained["mean"], tmp_path / "model")
    modules = json.loads((directory / "modules.json").read_text())
    dense = {"idx": 3, "name": "3", "path": "3_Dense", "type": "sentence_transformers.models.Dense"}
    (directory / "modules.json").write_text(json.dumps([*modules, dense]))
    with pytest.raises(ValueError, match="are not Transformer, Pooling"):
        load_encoder(str(directory), 0)
    (directory / "modules.json").write_text(json.dumps(modules))
    (directory / "1_Pooling" / "config.json").write_text('{"pooling_mode": "max"}')
    with pytest.raises(ValueError, match="pooling 'max' is not one of"):
        load_encoder(str(directory), 0)


def test_report_to_tensorboard_logs_the_jsonl_record(tiny_model_dir, tmp_path):
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    train_file = tmp_path / "train.jsonl"
    train_file.write_text(
        "".join(json.dumps({"query": q, "positive": d}) + "\n" for q, d in TOPICS)
    )
    out = tmp_path / "out"
    origin_train.main(train_args(tiny_model_dir, train_file, out, "--report_to", "tensorboard"))
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    events = EventAccumulator(str(out / "runs"))
    events.Reload()
    for name in ("loss", "lr", "samples_per_s", "tokens_per_s", "peak_mem_mb"):
        scalars = events.Scalars(f"train/{name}")
        assert [s.step for s in scalars] == [r["step"] for r in log]
        assert [s.value for s in scalars] == pytest.approx([r[name] for r in log], rel=1e-6)

"""The shared loader: every bad row is named by file, line and field; nothing is dropped."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from data import (
    Columns,
    DataError,
    Pair,
    Tokenize,
    collate,
    pad,
    read_beir,
    read_pairs,
    tokenize_pairs,
)


def write_lines(path, lines):
    path.write_bytes(
        b"\n".join(line if isinstance(line, bytes) else line.encode() for line in lines)
    )
    return path


GOOD = json.dumps({"query": "q", "positive": "d"})


@pytest.mark.parametrize(
    "bad_line, message",
    [
        ('{"query": "q", "positive": ', r":2: invalid JSON"),
        ('{"positive": "d"}', r":2: missing field 'query'"),
        ('{"query": "q", "positive": 7}', r":2: field 'positive' must be a string, got int"),
        ('{"query": "  ", "positive": "d"}', r":2: field 'query' is empty"),
        ('["q", "d"]', r":2: expected a JSON object, got list"),
        ('{"query": "q", "positive": "d", "negatives": 7}', r":2: field 'negatives' must be"),
        ('{"query": "q", "positive": "d", "negatives": [""]}', r":2: field 'negatives\[0\]'"),
        (b'{"query": "caf\xe9", "positive": "d"}', r":2: not valid UTF-8"),
    ],
)
def test_bad_rows_name_file_line_and_field(tmp_path, bad_line, message):
    path = write_lines(tmp_path / "train.jsonl", [GOOD, bad_line, GOOD])
    with pytest.raises(DataError, match=str(path).replace(".", r"\.") + message):
        read_pairs(path)


def test_blank_lines_are_skipped_but_rows_are_all_kept(tmp_path):
    rows = [{"query": f"q{i}", "positive": f"d{i}", "negatives": ["n"]} for i in range(3)]
    path = write_lines(tmp_path / "t.jsonl", [json.dumps(rows[0]), "", *map(json.dumps, rows[1:])])
    pairs = read_pairs(path)
    assert [p.query for p in pairs] == ["q0", "q1", "q2"]
    assert pairs[2].negatives == ["n"]
    assert pairs[0].id.endswith("t.jsonl:1") and pairs[2].id.endswith("t.jsonl:4")


def test_empty_and_missing_files(tmp_path):
    with pytest.raises(DataError, match="no training pairs"):
        read_pairs(write_lines(tmp_path / "empty.jsonl", [""]))
    with pytest.raises(DataError, match="no such file"):
        read_pairs(tmp_path / "absent.jsonl")


def test_datasets_dataset_in_memory_and_on_disk(tmp_path):
    datasets = pytest.importorskip("datasets")
    dataset = datasets.Dataset.from_dict({"query": ["a", "b"], "positive": ["x", "y"]})
    assert [p.positive for p in read_pairs(dataset)] == ["x", "y"]
    dataset.save_to_disk(str(tmp_path / "saved"))
    assert [p.query for p in read_pairs(tmp_path / "saved")] == ["a", "b"]
    broken = datasets.Dataset.from_dict({"query": ["a", ""], "positive": ["x", "y"]})
    with pytest.raises(DataError, match="row 1: field 'query' is empty"):
        read_pairs(broken)


def test_truncation_keeps_special_tokens_and_counts_cuts(tokenizer):
    tokenize = Tokenize(tokenizer, max_length=8)
    exact = "one two three four five six"  # 6 word pieces + [CLS] + [SEP] = 8
    ids, cut = tokenize(["short text", exact, exact + " seven eight"])
    assert cut == 1
    assert [len(i) for i in ids] == [4, 8, 8]
    for seq in ids:
        assert seq[0] == tokenizer.cls_token_id and seq[-1] == tokenizer.sep_token_id
    assert ids[1] == ids[2]  # the cut text keeps exactly the first six pieces


def test_truncation_is_reported(tokenizer, capsys):
    pairs = [Pair("a query", "word " * 50), Pair("another", "short")]
    tokenize_pairs(pairs, tokenizer, query_max_length=16, max_length=20)
    assert "1 of 2 documents longer than 20 tokens were truncated" in capsys.readouterr().out


def test_collate_marks_duplicates_and_shared_queries(tokenizer):
    pairs = [
        Pair("q same", "doc A", ["doc C"]),
        Pair("q other", "doc B"),
        Pair("q same", "doc D"),  # same query text: doc D is also a positive of query 0
        Pair("q third", "doc A"),  # same document as pair 0
    ]
    batch = collate(tokenize_pairs(pairs, tokenizer, 16, 16))
    assert len(batch.docs) == 5  # four positives, then the hard negative
    expected = torch.zeros(4, 5, dtype=torch.bool)
    expected[0, 2] = expected[2, 0] = True  # shared query
    expected[0, 3] = expected[3, 0] = True  # duplicate document
    assert torch.equal(batch.false_negatives, expected)


def test_pad_masks_to_longest():
    batch = pad([[1, 2, 3], [4]], pad_id=0)
    assert batch["input_ids"].tolist() == [[1, 2, 3], [4, 0, 0]]
    assert batch["attention_mask"].tolist() == [[1, 1, 1], [1, 0, 0]]


def write_beir(root, corpus, queries, qrels):
    (root / "qrels").mkdir(parents=True)
    write_lines(root / "corpus.jsonl", [json.dumps(r) for r in corpus])
    write_lines(root / "queries.jsonl", [json.dumps(r) for r in queries])
    (root / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\n" + qrels)
    return root


def test_beir_layout_loads(tmp_path):
    root = write_beir(
        tmp_path,
        [{"_id": "d1", "title": "T", "text": "body"}, {"_id": "d2", "text": "other"}],
        [{"_id": "q1", "text": "question"}],
        "q1\td1\t1\n",
    )
    beir = read_beir(root)
    assert beir.corpus == {"d1": "T\nbody", "d2": "other"}
    assert beir.qrels == {"q1": {"d1": 1}}


@pytest.mark.parametrize(
    "qrels, message",
    [
        ("q1\tnope\t1\n", r"test\.tsv: corpus-id 'nope' is not in corpus\.jsonl"),
        ("q9\td1\t1\n", r"test\.tsv: query-id 'q9' is not in queries\.jsonl"),
    ],
)
def test_qrels_naming_unknown_ids_fail(tmp_path, qrels, message):
    root = write_beir(tmp_path, [{"_id": "d1", "text": "x"}], [{"_id": "q1", "text": "q"}], qrels)
    with pytest.raises(DataError, match=message):
        read_beir(root)


def test_beir_bad_corpus_rows(tmp_path):
    root = write_beir(
        tmp_path,
        [{"_id": "d1", "text": "x"}, {"_id": "d1", "text": "y"}],
        [{"_id": "q1", "text": "q"}],
        "q1\td1\t1\n",
    )
    with pytest.raises(DataError, match=r"corpus\.jsonl:2: duplicate _id 'd1'"):
        read_beir(root)
    write_lines(root / "corpus.jsonl", [json.dumps({"_id": "d1", "title": "", "text": ""})])
    with pytest.raises(DataError, match=r"corpus\.jsonl:1: field 'text' is empty"):
        read_beir(root)


ROWS = [
    {"question": "q0", "answer": "d0", "hard": "n0"},
    {"question": "q1", "answer": "line one\nline two", "hard": ""},  # a quoted two-line cell
    {"question": "q2", "answer": "d2", "hard": "n2"},
]
RENAMED = Columns(query="question", positive="answer", negatives="hard")


def write_table(path, rows):
    """`rows` as a file of the format its suffix names, or a save_to_disk directory."""
    if path.suffix == ".jsonl":
        path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    elif path.suffix == ".csv":
        with open(path, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    else:
        datasets = pytest.importorskip("datasets")
        dataset = datasets.Dataset.from_list(rows)
        if path.suffix == ".parquet":
            dataset.to_parquet(str(path))
        else:
            dataset.save_to_disk(str(path))
    return path


@pytest.mark.parametrize("name", ["t.jsonl", "t.csv", "t.parquet", "saved"])
def test_every_format_reads_renamed_columns(tmp_path, name):
    pairs = read_pairs(write_table(tmp_path / name, ROWS), RENAMED)
    assert [(p.query, p.positive, p.negatives) for p in pairs] == [
        ("q0", "d0", ["n0"]),
        ("q1", "line one\nline two", []),  # an empty negatives cell means none
        ("q2", "d2", ["n2"]),
    ]


@pytest.mark.parametrize(
    "name, message",
    [
        ("t.jsonl", r"t\.jsonl:1: missing field 'query' \(fields found: question, answer, hard\)"),
        (
            "t.csv",
            r"t\.csv:1: no column 'query' \(--query_column\); columns found: question, answer",
        ),
        ("t.parquet", r"t\.parquet: no column 'query' .*columns found: question, answer, hard"),
        ("saved", r"saved: no column 'query' .*columns found: question, answer, hard"),
    ],
)
def test_missing_column_lists_the_columns_found(tmp_path, name, message):
    with pytest.raises(DataError, match=message):
        read_pairs(write_table(tmp_path / name, ROWS))


@pytest.mark.parametrize("name", ["t.jsonl", "t.csv", "t.parquet"])
def test_a_renamed_negatives_column_must_exist(tmp_path, name):
    path = write_table(tmp_path / name, ROWS)
    with pytest.raises(DataError, match="'negs'.*--negatives_column"):
        read_pairs(path, Columns("question", "answer", negatives="negs"))


def test_csv_errors_name_the_files_own_line_numbers(tmp_path):
    # the header is line 1 and the two-line cell takes lines 3-4, so the bad record is line 5
    rows = [*ROWS[:2], {"question": "q2", "answer": " ", "hard": ""}]
    path = write_table(tmp_path / "t.csv", rows)
    with pytest.raises(DataError, match=r"t\.csv:5: field 'answer' is empty"):
        read_pairs(path, RENAMED)
    assert [p.id for p in read_pairs(write_table(path, ROWS), RENAMED)] == [
        f"{path}:2",
        f"{path}:3",
        f"{path}:5",
    ]
    path.write_text("query,positive\nq0,d0\nq1,d1,extra\n")
    with pytest.raises(DataError, match=r"t\.csv:3: 3 fields, but the header has 2"):
        read_pairs(path)
    path.write_bytes(b"query,positive\nq0,d0\n\nq1,caf\xe9\n")
    with pytest.raises(DataError, match=r"t\.csv:4: not valid UTF-8"):
        read_pairs(path)


def test_csv_from_a_spreadsheet_with_byte_order_mark_and_a_long_cell(tmp_path):
    path = tmp_path / "t.csv"
    long_text = "word " * 40_000  # beyond csv's default 128 KiB field limit
    path.write_text(f'\ufeffquery,positive\nq,"{long_text}"\n', encoding="utf-8")
    (pair,) = read_pairs(path)
    assert pair.query == "q" and pair.positive == long_text


def test_parquet_rows_are_numbered_from_0(tmp_path):
    rows = [{"query": "q0", "positive": "d0", "negatives": ["a", "b"]}]
    rows.append({"query": "q1", "positive": None, "negatives": []})
    path = write_table(tmp_path / "t.parquet", rows)
    with pytest.raises(DataError, match=r"t\.parquet: row 1: field 'positive' must be a string"):
        read_pairs(path)
    (pair,) = read_pairs(write_table(path, rows[:1]))
    assert pair.negatives == ["a", "b"]


def test_saved_dataset_dict_asks_for_one_split(tmp_path):
    datasets = pytest.importorskip("datasets")
    split = datasets.Dataset.from_dict({"query": ["a"], "positive": ["x"]})
    datasets.DatasetDict({"train": split}).save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(DataError, match=r"has splits \['train'\]; pass one split, e.g. .*dd/train"):
        read_pairs(tmp_path / "dd")
    assert [p.query for p in read_pairs(tmp_path / "dd" / "train")] == ["a"]

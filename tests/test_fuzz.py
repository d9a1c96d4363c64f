"""Corrupted inputs end in a one-line error naming the file (and line), never a library traceback.

Hypothesis corrupts valid files (truncation, invalid UTF-8, wrong types,
huge lines, NUL bytes, duplicated lines, random bytes); each reader must
either accept the result or raise data.DataError / metrics.FormatError.
Examples are derandomised, so a failure reproduces on every run.
"""

from __future__ import annotations

import json
import re
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import metrics
from data import DataError, read_beir, read_pairs

FUZZ = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)
CLEAR_ERRORS = (DataError, metrics.FormatError)

PAIRS_JSONL = "".join(
    json.dumps({"query": f"query {i}", "positive": f"document {i}", "negatives": ["n"], "id": i})
    + "\n"
    for i in range(4)
).encode()
PAIRS_CSV = b"query,positive,negatives\n" + b"".join(
    f'query {i},"document, {i}",n\n'.encode() for i in range(4)
)
CORPUS = "".join(
    json.dumps({"_id": f"d{i}", "title": "t", "text": f"text {i}"}) + "\n" for i in range(3)
).encode()
QUERIES = "".join(json.dumps({"_id": f"q{i}", "text": f"query {i}"}) + "\n" for i in range(3))
BEIR_QRELS = b"query-id\tcorpus-id\tscore\n" + b"".join(
    f"q{i}\td{i}\t1\n".encode() for i in range(3)
)
TREC_QRELS = b"".join(f"q{i} 0 d{i} {i % 2}\n".encode() for i in range(4))
RUN = b"".join(f"q{i // 3} Q0 d{i} {i % 3 + 1} {1.5 - i / 10} tag\n".encode() for i in range(9))

# what a corruption inserts: bad encodings, wrong JSON types, huge and deeply nested lines
INSERTS = [
    b"\xff\xfe",
    b"\xc3",
    b"\x00",
    b'{"query": 7, "positive": null}\n',
    b'{"_id": ["x"], "text": {"a": 1}}\n',
    b"[1, 2]\n",
    b"NaN\n",
    b"q1 Q0 d1 1 nan tag\n",
    b"q1 0 d1 1e999999\n",
    b"q1 0 d1 " + b"9" * 5000 + b"\n",
    b"a" * 200_000 + b"\n",
    b"[" * 100_000 + b"\n",
    b"1" * 5000 + b"\n",
    b'"' * 3 + b"\n",
    b"\t\t\n",
]


@st.composite
def corrupted(draw, valid: bytes) -> bytes:
    """`valid` after one corruption drawn by Hypothesis."""
    kind = draw(st.sampled_from(["truncate", "insert", "duplicate", "flip", "empty", "random"]))
    at = draw(st.integers(0, len(valid)))
    if kind == "truncate":
        return valid[:at]
    if kind == "insert":
        return valid[:at] + draw(st.sampled_from(INSERTS)) + valid[at:]
    if kind == "duplicate":
        lines = valid.splitlines(keepends=True)
        line = draw(st.sampled_from(lines))
        return valid + line
    if kind == "flip":
        mutated = bytearray(valid)
        for _ in range(draw(st.integers(1, 8))):
            mutated[draw(st.integers(0, len(mutated) - 1))] = draw(st.integers(0, 255))
        return bytes(mutated)
    if kind == "empty":
        return b""
    return draw(st.binary(max_size=300))


def assert_clear(read, path: Path) -> None:
    """`read()` succeeds or fails with one line that names `path`; anything else fails the test."""
    try:
        read()
    except CLEAR_ERRORS as err:
        message = str(err)
        assert str(path) in message, message
        assert "\n" not in message, message


@FUZZ
@given(st.data())
def test_corrupted_training_pairs(data):
    suffix, valid = data.draw(st.sampled_from([(".jsonl", PAIRS_JSONL), (".csv", PAIRS_CSV)]))
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"train{suffix}"
        path.write_bytes(data.draw(corrupted(valid)))
        assert_clear(lambda: read_pairs(path), path)


@FUZZ
@given(st.data())
def test_corrupted_parquet_pairs(data):
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "train.parquet"
        rows = [json.loads(line) for line in PAIRS_JSONL.splitlines()]
        pd.DataFrame(rows).to_parquet(path)
        path.write_bytes(data.draw(corrupted(path.read_bytes())))
        assert_clear(lambda: read_pairs(path), path)


@FUZZ
@given(st.data())
def test_corrupted_beir_directory(data):
    files = {
        "corpus.jsonl": CORPUS,
        "queries.jsonl": QUERIES.encode(),
        "qrels/test.tsv": BEIR_QRELS,
    }
    broken = data.draw(st.sampled_from(sorted(files)))
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "qrels").mkdir()
        for name, valid in files.items():
            (root / name).write_bytes(data.draw(corrupted(valid)) if name == broken else valid)
        assert_clear(lambda: read_beir(root), root / broken)


@FUZZ
@given(st.data())
def test_corrupted_qrels_and_runs(data):
    read, valid = data.draw(
        st.sampled_from(
            [
                (metrics.read_qrels, BEIR_QRELS),
                (metrics.read_qrels, TREC_QRELS),
                (metrics.read_run, RUN),
            ]
        )
    )
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "file.txt"
        path.write_bytes(data.draw(corrupted(valid)))
        assert_clear(lambda: read(path), path)


LINE = {"data": r":{line}: ", "metrics": r", line {line}: "}


@pytest.mark.parametrize(
    "reader, valid, bad, line, module",
    [
        (read_pairs, PAIRS_JSONL, b'{"query": "q", "posi', 5, "data"),  # a truncated last line
        (read_pairs, PAIRS_JSONL, b'{"query": "caf\xe9", "positive": "d"}', 5, "data"),
        (read_pairs, PAIRS_JSONL, b"[" * 100_000, 5, "data"),  # too deep for json's recursion
        (read_pairs, PAIRS_JSONL, b'{"query": "q", "positive": "d", "id": 1}', 5, "data"),
        (read_pairs, PAIRS_JSONL, b'{"query": "q", "positive": "d", "id": [1]}', 5, "data"),
        (metrics.read_qrels, TREC_QRELS, b"q9 0 d9 " + b"9" * 5000, 5, "metrics"),
        (metrics.read_qrels, TREC_QRELS, b"q9 0 d\xff 1", 5, "metrics"),
        (metrics.read_run, RUN, b"q9 Q0 d9 1 0.5", 10, "metrics"),
        (metrics.read_run, RUN, b"q9 Q0 d9 1 0.\xc3 tag", 10, "metrics"),
    ],
    ids=[
        "truncated",
        "latin-1",
        "deep",
        "duplicate-id",
        "list-id",
        "huge-grade",
        "bad-byte",
        "short-run-line",
        "bad-byte-run",
    ],
)
def test_bad_line_is_named(reader, valid, bad, line, module, tmp_path):
    path = tmp_path / "file.jsonl"
    path.write_bytes(valid + bad + b"\n")
    with pytest.raises(CLEAR_ERRORS, match=re.escape(str(path)) + LINE[module].format(line=line)):
        reader(path)


@pytest.mark.parametrize("reader", [read_pairs, metrics.read_qrels, metrics.read_run])
def test_empty_file_is_named(reader, tmp_path):
    path = tmp_path / "empty.txt"
    path.write_bytes(b"\n\n")
    with pytest.raises(CLEAR_ERRORS, match=re.escape(str(path)) + ".*no "):
        reader(path)

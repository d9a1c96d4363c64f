"""Training pairs, evaluation sets and batching, shared by both trainers and eval.py.

Training data is (query, positive document) pairs, with optional hard
negatives, from a JSONL file (one `{"query", "positive", "negatives"?}`
object per line), a CSV or Parquet file, or a `datasets` dataset with those
columns; `Columns` renames them. Evaluation data is the BEIR layout:
corpus.jsonl, queries.jsonl and qrels/test.tsv.

Every bad row stops the run with the file, line and field at fault; nothing
is dropped silently. Texts are tokenised once, up front, and cut to their
length limit (the number cut is reported); batches pad to their longest
member, never to the limit.

    python data.py            # fetch and build the default RFC dataset
    python data.py --help     # its options
"""

from __future__ import annotations

import csv
import json
import os
import statistics
from dataclasses import dataclass, field
from pathlib import Path

import torch
from transformers import PreTrainedTokenizerBase


class DataError(ValueError):
    """Bad input data; the message names the file, line and field."""


@dataclass
class Pair:
    query: str
    positive: str
    negatives: list[str] = field(default_factory=list)
    id: str = ""


@dataclass(frozen=True)
class Columns:
    """Which column (or JSON field) of the training data holds each part of a pair."""

    query: str = "query"
    positive: str = "positive"
    negatives: str = "negatives"


def _check_text(row: dict, key: str, where: str) -> str:
    if key not in row:
        raise DataError(
            f"{where}: missing field {key!r} (fields found: {', '.join(row) or 'none'})"
        )
    value = row[key]
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {type(value).__name__}")
    if not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return value


def _pair_from_row(row, where: str, columns: Columns) -> Pair:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    negatives = row.get(columns.negatives) or []
    if isinstance(negatives, str):
        # one hard negative per row, as a CSV cell or an (anchor, positive, negative) set has it
        negatives = [negatives]
    if not isinstance(negatives, list):
        raise DataError(f"{where}: field {columns.negatives!r} must be a string or list of strings")
    for i, text in enumerate(negatives):
        key = f"{columns.negatives}[{i}]"
        _check_text({key: text}, key, where)
    pair_id = row.get("id", where)
    if isinstance(pair_id, bool) or not isinstance(pair_id, (str, int)):
        raise DataError(f"{where}: field 'id' must be a string or integer, got {pair_id!r}")
    return Pair(
        query=_check_text(row, columns.query, where),
        positive=_check_text(row, columns.positive, where),
        negatives=list(negatives),
        id=str(pair_id),
    )


def _check_columns(found: list[str], columns: Columns, where: str) -> None:
    """Fail up front, listing the columns there are, when a table lacks one that is needed.

    The negatives column is optional under its default name; named explicitly, it must exist.
    """
    needed = {"query": columns.query, "positive": columns.positive}
    if columns.negatives != Columns.negatives:
        needed["negatives"] = columns.negatives
    for role, name in needed.items():
        if name not in found:
            raise DataError(
                f"{where}: no column {name!r} (--{role}_column); "
                f"columns found: {', '.join(found) or 'none'}"
            )


def _read_jsonl(path: Path):
    """Yield (line number, object) for each non-blank line, failing on bad JSON or encoding."""
    with open(path, "rb") as f:
        for number, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as err:
                raise DataError(f"{path}:{number}: not valid UTF-8 ({err.reason})") from None
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as err:
                raise DataError(f"{path}:{number}: invalid JSON ({err.msg})") from None
            except (ValueError, RecursionError) as err:
                # valid JSON past what Python takes: nesting deeper than its recursion limit,
                # or an integer of more than 4300 digits
                raise DataError(f"{path}:{number}: JSON too deep or too long ({err})") from None
            yield number, row


def _jsonl_rows(path: Path, columns: Columns) -> list[tuple[str, dict]]:
    rows = [(f"{path}:{number}", row) for number, row in _read_jsonl(path)]
    named = columns.negatives != Columns.negatives
    if named and rows and not any(isinstance(r, dict) and columns.negatives in r for _, r in rows):
        # the per-row checks allow a missing negatives field, so a misnamed one needs this
        raise DataError(f"{path}: no row has field {columns.negatives!r} (--negatives_column)")
    return rows


def _utf8_lines(f, path: Path):
    """Decode a binary file line by line, so a bad byte is reported at its own line."""
    for number, raw in enumerate(f, start=1):
        try:
            # utf-8-sig: spreadsheet programs start their CSV files with a byte order mark
            yield raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError as err:
            raise DataError(f"{path}:{number}: not valid UTF-8 ({err.reason})") from None


def _csv_rows(path: Path, columns: Columns):
    """Yield ("file:line", row dict) per record; the header is line 1, blank lines are skipped."""
    # documents of a long-context retriever easily pass csv's default 128 KiB field limit
    csv.field_size_limit(max(csv.field_size_limit(), 2**31 - 1))
    with open(path, "rb") as f:
        reader = csv.reader(_utf8_lines(f, path))
        try:
            header = next(reader, [])
            _check_columns(header, columns, f"{path}:1")
            line = reader.line_num
            for cells in reader:
                # a quoted field may span lines: a record starts after the previous one ends
                start, line = line + 1, reader.line_num
                if not cells:
                    continue
                if len(cells) != len(header):
                    raise DataError(
                        f"{path}:{start}: {len(cells)} fields, but the header has {len(header)}"
                    )
                yield f"{path}:{start}", dict(zip(header, cells, strict=True))
        except csv.Error as err:
            raise DataError(f"{path}:{reader.line_num}: {err}") from None


def _parquet_rows(path: Path, columns: Columns):
    import pyarrow
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
        rows = table.to_pylist()
    except (pyarrow.ArrowException, OSError, UnicodeDecodeError) as err:
        # damage shows in thrift or page decoding (some reported as OSError) or in a string's bytes
        message = str(err).replace("\n", " ").strip()
        raise DataError(f"{path}: not a readable Parquet file ({message})") from None
    _check_columns(table.column_names, columns, str(path))
    for i, row in enumerate(rows):
        yield f"{path}: row {i}", row


def _dataset_rows(dataset, columns: Columns, where: str):
    """Rows of a `datasets.Dataset`, or any iterable of dicts, named "row N" from 0."""
    import datasets

    if isinstance(dataset, datasets.DatasetDict):
        raise DataError(f"{where}: has splits {list(dataset)}; pass one split, e.g. {where}/train")
    if isinstance(dataset, datasets.Dataset):
        _check_columns(dataset.column_names, columns, where)
    for i, row in enumerate(dataset):
        yield f"{where}: row {i}", row


def _saved_dataset_rows(path: Path, columns: Columns):
    import datasets

    try:
        dataset = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise DataError(f"{path}: not a dataset saved with save_to_disk ({err})") from None
    return _dataset_rows(dataset, columns, str(path))


def read_pairs(source, columns: Columns = Columns()) -> list[Pair]:
    """Training pairs from a file, a `save_to_disk` directory, or an in-memory `datasets.Dataset`.

    Files are read by suffix: `.csv` (a header row; a negatives cell is one text), `.parquet`,
    anything else JSONL. A negatives value is a list of texts or one text; an optional `id`
    (string or integer, unique) names the pair, else its file and line do. Errors name the
    file and its line (JSONL, CSV: the header is line 1) or 0-based "row N" (Parquet,
    datasets), and the field; a table missing a column fails listing those it has.
    """
    if not isinstance(source, (str, os.PathLike)):
        rows, where = _dataset_rows(source, columns, "dataset"), "dataset"
    else:
        path = where = Path(source)
        if path.is_dir():
            rows = _saved_dataset_rows(path, columns)
        elif not path.is_file():
            raise DataError(f"{path}: no such file")
        elif path.suffix.lower() == ".csv":
            rows = _csv_rows(path, columns)
        elif path.suffix.lower() == ".parquet":
            rows = _parquet_rows(path, columns)
        else:
            rows = _jsonl_rows(path, columns)
    pairs, first_seen = [], {}
    for row_where, row in rows:
        pair = _pair_from_row(row, row_where, columns)
        # ids name examples in error messages (a non-finite loss): each must name one
        if pair.id in first_seen:
            raise DataError(
                f"{row_where}: duplicate id {pair.id!r} (first at {first_seen[pair.id]})"
            )
        first_seen[pair.id] = row_where
        pairs.append(pair)
    if not pairs:
        raise DataError(f"{where}: no training pairs")
    return pairs


class Tokenize:
    """Tokenise texts once, cut to `max_length` tokens with the special tokens kept.

    Truncation happens on the bare token ids, then the model's special tokens
    (found by probing the tokenizer) are put back around them, so a cut text
    still ends with [SEP] / </s>. Counting what was cut comes for free.
    """

    def __init__(self, tokenizer: PreTrainedTokenizerBase, max_length: int):
        bare = tokenizer("a", add_special_tokens=False)["input_ids"]
        full = tokenizer("a")["input_ids"]
        start = next(i for i in range(len(full)) if full[i : i + len(bare)] == bare)
        self.prefix, self.suffix = full[:start], full[start + len(bare) :]
        self.budget = max_length - len(self.prefix) - len(self.suffix)
        if self.budget < 1:
            raise ValueError(f"max_length {max_length} leaves no room beside special tokens")
        self.tokenizer = tokenizer
        self.max_length = max_length

    def __call__(self, texts: list[str], chunk: int = 256) -> tuple[list[list[int]], int]:
        """Returns the token ids of each text and how many texts were cut."""
        ids, truncated = [], 0
        for start in range(0, len(texts), chunk):
            # one past the budget tells a cut text from one that fits exactly
            batch = self.tokenizer(
                texts[start : start + chunk],
                add_special_tokens=False,
                truncation=True,
                max_length=self.budget + 1,
            )["input_ids"]
            for tokens in batch:
                truncated += len(tokens) > self.budget
                ids.append(self.prefix + tokens[: self.budget] + self.suffix)
        return ids, truncated


def warn_truncated(what: str, truncated: int, total: int, max_length: int) -> None:
    if truncated:
        print(f"note: {truncated} of {total} {what} longer than {max_length} tokens were truncated")


@dataclass
class TokenizedPair:
    query: list[int]
    positive: list[int]
    negatives: list[list[int]]
    id: str
    # texts, to tell duplicates apart from merely similar documents
    query_text: str
    doc_texts: list[str]


def tokenize_pairs(
    pairs: list[Pair], tokenizer: PreTrainedTokenizerBase, query_max_length: int, max_length: int
) -> list[TokenizedPair]:
    """Tokenise every pair once; report how many queries and documents were truncated."""
    queries, q_cut = Tokenize(tokenizer, query_max_length)([p.query for p in pairs])
    doc_texts = [[p.positive, *p.negatives] for p in pairs]
    flat = [text for texts in doc_texts for text in texts]
    docs, d_cut = Tokenize(tokenizer, max_length)(flat)
    warn_truncated("queries", q_cut, len(pairs), query_max_length)
    warn_truncated("documents", d_cut, len(flat), max_length)
    out, cursor = [], 0
    for pair, query, texts in zip(pairs, queries, doc_texts, strict=True):
        group = docs[cursor : cursor + len(texts)]
        cursor += len(texts)
        out.append(TokenizedPair(query, group[0], group[1:], pair.id, pair.query, texts))
    return out


@dataclass
class Batch:
    """One contrastive batch, unpadded: each trainer pads the pieces it forwards.

    queries: n ids lists; docs: the n positives, then every hard negative.
    false_negatives: bool [n, len(docs)], see `model.info_nce_loss`.
    Under torchrun, queries, docs and ids are this process's share of the
    global batch, false_negatives covers the whole global batch (as
    distributed.gather_reps orders it), and negative_counts holds every
    share's number of hard negatives, so gathered documents can be put in order.
    """

    queries: list[list[int]]
    docs: list[list[int]]
    false_negatives: torch.Tensor
    ids: list[str]
    negative_counts: list[int] = field(default_factory=list)

    def __post_init__(self):
        if not self.negative_counts:  # one process: the only share is this one
            self.negative_counts = [len(self.docs) - len(self.queries)]

    def __len__(self) -> int:
        return len(self.queries)

    @property
    def num_tokens(self) -> int:
        return sum(map(len, self.queries)) + sum(map(len, self.docs))


def collate(examples: list[TokenizedPair], rank: int = 0, world_size: int = 1) -> Batch:
    """Stack pairs into a batch and mark documents that must not be negatives.

    With world_size > 1, `examples` is the global batch, cut into world_size
    equal shares, and the Batch holds share `rank` (see `Batch`).
    """
    n = len(examples) // world_size
    shares = [examples[r * n : (r + 1) * n] for r in range(world_size)]
    mine = shares[rank]
    docs = [e.positive for e in mine] + [neg for e in mine for neg in e.negatives]
    return Batch(
        [e.query for e in mine],
        docs,
        false_negative_mask(examples),
        [e.id for e in mine],
        [sum(len(e.negatives) for e in share) for share in shares],
    )


def false_negative_mask(examples: list[TokenizedPair]) -> torch.Tensor:
    """bool [n, n + negatives]: True where document j must not be a negative of query i.

    Documents are every positive, then every hard negative. Masked: a copy of
    query i's positive, and the positive of another query with i's text.
    """
    n = len(examples)
    doc_texts = [e.doc_texts[0] for e in examples] + [t for e in examples for t in e.doc_texts[1:]]
    docs = _text_codes(doc_texts)  # [n + negatives]
    queries = _text_codes([e.query_text for e in examples])  # [n]
    mask = docs[None, :] == docs[:n, None]  # [n, n + negatives]
    mask[:, :n] |= queries[None, :] == queries[:, None]
    mask[torch.arange(n), torch.arange(n)] = False  # a query's own positive
    return mask


def _text_codes(texts: list[str]) -> torch.Tensor:
    """One integer per text, equal exactly where the texts are."""
    codes: dict[str, int] = {}
    return torch.tensor([codes.setdefault(text, len(codes)) for text in texts])


class BatchSampler:
    """Endless batches of example indices, reshuffled each epoch by one seeded generator.

    Each epoch is a permutation drawn from the generator, cut into batches of
    `batch_size`; the rest that cannot fill a batch is left out, so every batch
    (and under torchrun every process's share of it) has the same size. The
    position (epoch, batches taken from it) and the generator's state at the
    epoch's start are the whole state: `load_state_dict` redraws that epoch's
    order and carries on exactly where `state_dict` was taken.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int):
        if num_examples < batch_size:
            raise ValueError(f"{num_examples} examples cannot fill a batch of {batch_size}")
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.generator = torch.Generator().manual_seed(seed)
        self.epoch, self.taken = 0, 0
        self._shuffle()

    def __len__(self) -> int:
        """Batches per epoch."""
        return self.num_examples // self.batch_size

    def _shuffle(self) -> None:
        self.epoch_start = self.generator.get_state()
        self.order = torch.randperm(self.num_examples, generator=self.generator).tolist()

    def __iter__(self) -> BatchSampler:
        return self

    def __next__(self) -> list[int]:
        if self.taken == len(self):
            self.epoch, self.taken = self.epoch + 1, 0
            self._shuffle()
        start = self.taken * self.batch_size
        self.taken += 1
        return self.order[start : start + self.batch_size]

    def state_dict(self) -> dict:
        return {
            "num_examples": self.num_examples,
            "batch_size": self.batch_size,
            "epoch": self.epoch,
            "taken": self.taken,
            "generator": self.epoch_start,
        }

    def load_state_dict(self, state: dict) -> None:
        """Resume at `state`'s position; the data must be the same size as when it was taken."""
        for name in ("num_examples", "batch_size"):
            if state[name] != getattr(self, name):
                raise ValueError(
                    f"{name} was {state[name]} when the checkpoint was saved, now "
                    f"{getattr(self, name)}: the data or the batch changed"
                )
        self.epoch, self.taken = state["epoch"], state["taken"]
        self.generator.set_state(state["generator"])
        self._shuffle()


def pad(seqs: list[list[int]], pad_id: int, device=None) -> dict[str, torch.Tensor]:
    """Right-pad id lists to their longest member: {"input_ids", "attention_mask"} [n, longest]."""
    longest = max(map(len, seqs))
    input_ids = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    attention_mask = torch.zeros((len(seqs), longest), dtype=torch.long)
    for row, ids in enumerate(seqs):
        input_ids[row, : len(ids)] = torch.tensor(ids)
        attention_mask[row, : len(ids)] = 1
    return {"input_ids": input_ids.to(device), "attention_mask": attention_mask.to(device)}


@dataclass
class BeirSet:
    corpus: dict[str, str]  # doc id -> title and text
    queries: dict[str, str]  # query id -> text
    qrels: dict[str, dict[str, int]]  # query id -> doc id -> grade


def _read_ids(path: Path, fields: tuple[str, ...]) -> dict[str, str]:
    texts = {}
    for number, row in _read_jsonl(path):
        where = f"{path}:{number}"
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected a JSON object")
        key = row.get("_id")
        if not isinstance(key, (str, int)) or str(key) == "":
            raise DataError(f"{where}: field '_id' is missing or not a string")
        if str(key) in texts:
            raise DataError(f"{where}: duplicate _id {key!r}")
        parts = [row.get(f) or "" for f in fields]
        if not all(isinstance(p, str) for p in parts):
            raise DataError(f"{where}: fields {fields} must be strings")
        text = "\n".join(p for p in parts if p.strip())
        if not text:
            raise DataError(f"{where}: field {fields[-1]!r} is empty")
        texts[str(key)] = text
    if not texts:
        raise DataError(f"{path}: no entries")
    return texts


def read_beir(data_dir: str | os.PathLike, split: str = "test") -> BeirSet:
    """Load a BEIR-layout directory and check that its qrels name known ids."""
    from metrics import read_qrels

    data_dir = Path(data_dir)
    for name in ("corpus.jsonl", "queries.jsonl", f"qrels/{split}.tsv"):
        if not (data_dir / name).is_file():
            raise DataError(f"{data_dir / name}: no such file (expected the BEIR layout)")
    corpus = _read_ids(data_dir / "corpus.jsonl", ("title", "text"))
    queries = _read_ids(data_dir / "queries.jsonl", ("text",))
    qrels_path = data_dir / "qrels" / f"{split}.tsv"
    qrels = read_qrels(qrels_path)
    for qid, docs in qrels.items():
        if qid not in queries:
            raise DataError(f"{qrels_path}: query-id {qid!r} is not in queries.jsonl")
        unknown = [d for d in docs if d not in corpus]
        if unknown:
            raise DataError(f"{qrels_path}: corpus-id {unknown[0]!r} is not in corpus.jsonl")
    return BeirSet(corpus, queries, qrels)


def token_lengths(ids: list[list[int]]) -> str:
    """A one-line length summary for logs."""
    lengths = sorted(map(len, ids))
    p90 = lengths[int(0.9 * (len(lengths) - 1))]
    return f"median {statistics.median(lengths):.0f}, p90 {p90}, max {lengths[-1]} tokens"


def default_dataset(variant: str = "nointro", package_set: str = "small", rfc_dir=None) -> Path:
    """The default RFC dataset directory, built on first use."""
    import corpora

    return corpora.prepare_rfc(variant=variant, package_set=package_set, rfc_dir=rfc_dir)


def main(argv: list[str] | None = None) -> Path:
    """`python data.py`: build the default dataset (options as `python corpora.py`)."""
    import corpora

    return corpora.main(argv)


if __name__ == "__main__":
    main()

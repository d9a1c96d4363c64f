"""corpora.py on synthetic RFC, man page and kernel doc files: cleaning, bad inputs, splits, BEIR.

No network and no real package text: every document here is generated below.
"""

from __future__ import annotations

import gzip
import json
import random
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import corpora  # noqa: E402
from corpora import CorpusUnavailable, Pair, assign_splits, clean_rfc, prepare_rfc  # noqa: E402

WORDS = (
    "packet router header field option value sender receiver session timer window "
    "address prefix label path message request response server client state"
).split()


def prose(seed: int, n_words: int, width: int = 66, indent: str = "   ") -> list[str]:
    """Deterministic filler paragraph, wrapped like RFC text."""
    rng = random.Random(seed)
    words = [rng.choice(WORDS) for _ in range(n_words)]
    lines, line = [], indent
    for word in words:
        if len(line) + len(word) + 1 > width:
            lines.append(line.rstrip())
            line = indent
        line += word + " "
    lines.append(line.rstrip() + ".")
    return lines


def paginate(lines: list[str], number: int, title: str, per_page: int = 30) -> str:
    """nroff-style pages: footer "[Page N]", form feed, running header on later pages."""
    pages = [lines[i : i + per_page] for i in range(0, len(lines), per_page)]
    out = []
    for n, page in enumerate(pages, 1):
        if n > 1:
            out.append(f"RFC {number}{' ' * 10}{title}{' ' * 10}June 1999\n\n")
        body = "\n".join(page)
        footer = f"Author{' ' * 30}Experimental{' ' * 20}[Page {n}]"
        out.append(f"{body}\n\n{footer}\n" + ("\f\n" if n < len(pages) else ""))
    return "".join(out)


ABSTRACT_SENTENCE = "This memo defines the zebra quokka transfer protocol."


def nroff_rfc(number: int, title: str = "The Zebra Quokka Protocol", sections=None) -> str:
    """A 1990s-2000s style RFC: header block, boilerplate, abstract, TOC with leaders."""
    sections = sections or ["Introduction", "Protocol Overview", "Message Format", "Security"]
    lines = [
        "",
        f"Network Working Group{' ' * 40}A. Author",
        f"Request for Comments: {number}{' ' * 34}Example Org",
        f"Category: Experimental{' ' * 39}June 1999",
        "",
        f"{' ' * 20}{title}",
        "",
        "Status of this Memo",
        "",
        "   This memo defines an Experimental Protocol for the Internet",
        "   community.  Distribution of this memo is unlimited.",
        "",
        "Copyright Notice",
        "",
        "   Copyright (C) The Internet Society (1999).  All Rights Reserved.",
        "",
        "Abstract",
        "",
        f"   {ABSTRACT_SENTENCE}",
        "",
        "Table of Contents",
        "",
    ]
    lines += [
        f"   {k}. {name} {'.' * (50 - len(name))} {k + 1}" for k, name in enumerate(sections, 1)
    ]
    lines += ["   Full Copyright Statement ..................................... 9", ""]
    for k, name in enumerate(sections, 1):
        lines += [f"{k}.  {name}", ""]
        if name == "Introduction":
            lines += [f"   {ABSTRACT_SENTENCE}", ""]
        lines += prose(number * 100 + k, 60) + [""]
    lines += [
        "Full Copyright Statement",
        "",
        "   Copyright (C) The Internet Society (1999).  All Rights Reserved.",
        "",
        "   This document and translations of it may be copied and furnished to",
        "   others provided that the above copyright notice is included.",
        "",
        "Acknowledgement",
        "",
        "   Funding for the RFC Editor function is currently provided by the",
        "   Internet Society.",
    ]
    return paginate(lines, number, title)


def v3_rfc(number: int) -> str:
    """An xml2rfc v3 RFC: BOM, no pages, abstract first, TOC without leaders."""
    lines = [
        "\ufeff",
        f"Internet Engineering Task Force (IETF){' ' * 20}A. Author",
        f"Request for Comments: {number}{' ' * 30}Example Org",
        f"Category: Experimental{' ' * 30}January 2023",
        "",
        "        The Quokka Extension",
        "",
        "Abstract",
        "",
        f"   {ABSTRACT_SENTENCE}",
        "",
        "Status of This Memo",
        "",
        "   This document is not an Internet Standards Track specification.",
        "",
        "Table of Contents",
        "",
        "   1.  Introduction",
        "   2.  Terminology",
        "     2.1.  Requirements Language",
        "   3.  Extension",
        "   Author's Address",
        "",
        "1.  Introduction",
        "",
        f"   {ABSTRACT_SENTENCE}",
        "",
        "2.  Terminology",
        "",
        *prose(number, 70),
        "",
        "3.  Extension",
        "",
        *prose(number + 1, 70),
    ]
    return "\n".join(lines) + "\n"


def old_rfc(number: int, title: str = "Quokka Host Status Report") -> str:
    """A 1970s RFC: no boilerplate, no sections, centred title, body at column 0."""
    lines = [
        f"Network Working Group{' ' * 30}A. Author",
        f"Request for Comments: {number}{' ' * 30}Example Org",
        f"NIC: 1234{' ' * 40}12 May 1971",
        "",
        f"{' ' * 24}{title.upper()}",
        "",
        *prose(number, 150, indent=""),
    ]
    return "\n".join(lines) + "\n"


def write_rfc(directory: Path, number: int, text: str | bytes | None, **meta) -> Path:
    """rfcN.json (+ rfcN.txt.gz unless text is None), shaped like the doc-rfc-* files."""
    directory.mkdir(parents=True, exist_ok=True)
    fields = {
        "doc_id": f"RFC{number:04d}",
        "title": f" Quokka Protocol {number} ",
        "abstract": f"  Quokka abstract number {number}.  {ABSTRACT_SENTENCE}  ",
        "obsoletes": [],
        "obsoleted_by": [],
        "updates": [],
        "pub_date": "June 1999",
        "status": "EXPERIMENTAL",
        "keywords": [],
    }
    fields.update(meta)
    path = directory / f"rfc{number}.json"
    path.write_text(json.dumps({k: v for k, v in fields.items() if v is not None}))
    if text is not None:
        data = text.encode() if isinstance(text, str) else text
        (directory / f"rfc{number}.txt.gz").write_bytes(gzip.compress(data))
    return path


@pytest.fixture(autouse=True)
def no_system_files(tmp_path, monkeypatch):
    """Never read the machine's /usr/share/doc/RFC or cache, and never fetch."""
    monkeypatch.setattr(corpora, "SYSTEM_RFC_DIR", tmp_path / "no-system-rfc")
    monkeypatch.setenv("LONGCL_CACHE", str(tmp_path / "cache"))

    def no_fetch(*args, **kwargs):
        raise CorpusUnavailable("network disabled in tests")

    monkeypatch.setattr(corpora, "fetch_debian_packages", no_fetch)


@pytest.fixture
def rfc_dir(tmp_path) -> Path:
    """A doc-rfc-experimental shaped tree of 60 good RFCs with some linked and shared ones."""
    root = tmp_path / "RFC"
    exp = root / "experimental"
    for n in range(1000, 1060):
        write_rfc(exp, n, nroff_rfc(n) if n % 3 else v3_rfc(n))
    # a chain of obsoletes (one end absent from the tree) and a shared abstract
    write_rfc(exp, 1001, nroff_rfc(1001), obsoleted_by=["RFC1002"])
    write_rfc(exp, 1002, nroff_rfc(1002), obsoletes=["RFC1001"], obsoleted_by=["RFC1003"])
    write_rfc(exp, 1003, nroff_rfc(1003), obsoletes=["RFC1002", "RFC0999"])
    write_rfc(exp, 1040, nroff_rfc(1040), abstract="One shared abstract.")
    write_rfc(exp, 1050, nroff_rfc(1050), abstract="  One   shared abstract. ")
    return root


def nonblank(text: str) -> list[str]:
    return [ln for ln in text.split("\n") if ln.strip()]


# ------------------------------------------------------------------------------ cleaning rules


def test_page_furniture_goes_and_text_runs_on():
    lines = ["   first line of text", *prose(1, 200), "   last line of text"]
    text = "\n".join(corpora.strip_page_furniture(paginate(lines, 4321, "Some Title")))
    assert "\f" not in text
    assert "[Page" not in text
    assert "RFC 4321" not in text
    assert "Some Title" not in text
    assert "first line of text" in text and "last line of text" in text
    # every prose line survives, in order
    kept = [ln for ln in text.split("\n") if ln.strip()]
    assert kept == [ln for ln in lines if ln.strip()]


def test_two_line_running_header_and_footer_without_form_feed():
    raw = (
        "   text one\n\n[Page 1]\n\f\nSeptember 1981\n"
        + " " * 50
        + "Internet Protocol\n\n   text two\n"
        + "\n"
        + " " * 30
        + "[Page 2]\n\nRFC  635           An Assessment          May 1974\n\n   text three\n"
        + "\n                                -3-\n\f\n   text four\n\n     Page 4\n\f\n"
    )
    assert nonblank("\n".join(corpora.strip_page_furniture(raw))) == [
        "   text one",
        "   text two",
        "   text three",
        "   text four",
    ]


def test_a_running_header_in_no_known_form_goes_when_it_repeats():
    pages = ["\n".join(prose(k, 40)) for k in range(5)]
    raw = "\f\n".join(
        (f"     Quokka Specification{' ' * 20}Chapter {k}\n\n" if k else "") + page
        for k, page in enumerate(pages)
    )
    text = "\n".join(corpora.strip_page_furniture(raw))
    assert "Quokka Specification" not in text
    assert nonblank(text) == nonblank("\n".join(pages))


def test_bom_crlf_nul_and_tabs_are_normalised():
    lines = corpora.strip_page_furniture("\ufeffline\x00 one\r\n\tindented\r\n")
    assert lines[:2] == ["line one", "        indented"]


def test_nroff_rfc_full_drops_front_matter_and_tail_boilerplate():
    body, route = clean_rfc(nroff_rfc(2000), "full")
    assert route == "numbered"
    assert body.startswith("1.  Introduction")
    for leak in (
        "Status of this Memo",
        "Copyright",
        "Abstract",
        "Table of Contents",
        "....",
        "Request for Comments",
        "The Zebra Quokka Protocol",
        "[Page",
        "Funding for the RFC Editor",
        "may be copied",
    ):
        assert leak not in body, leak
    assert "4.  Security" in body


def test_nointro_starts_at_section_2_and_drops_restated_abstract():
    full, _ = clean_rfc(nroff_rfc(2001), "full")
    body, route = clean_rfc(nroff_rfc(2001), "nointro")
    assert route == "nointro_section2"
    assert ABSTRACT_SENTENCE in full
    assert ABSTRACT_SENTENCE not in body
    assert body.startswith("2.  Protocol Overview")


def test_nointro_skips_an_introduction_numbered_2():
    text = nroff_rfc(2002, sections=["Conventions", "Introduction", "Format", "Security"])
    body, route = clean_rfc(text, "nointro")
    assert route == "nointro_section3_after_intro"
    assert body.startswith("3.  Format")


def test_v3_toc_without_leaders_is_not_the_body():
    body, route = clean_rfc(v3_rfc(9000), "full")
    assert route == "numbered"
    assert body.startswith("1.  Introduction")
    assert "Requirements Language" not in body  # only in the TOC
    assert "Status of This Memo" not in body and "\ufeff" not in body
    nointro, _ = clean_rfc(v3_rfc(9000), "nointro")
    assert nointro.startswith("2.  Terminology")
    assert ABSTRACT_SENTENCE not in nointro


def test_toc_entries_at_the_headings_indentation_end_where_a_heading_repeats():
    lines = ["Table of Contents", ""]
    lines += ["   1  Introduction                         1", "   2  The problem       3", ""]
    lines += ["   1  Introduction", "", *prose(1, 40), "", "   2  The problem", "", *prose(2, 40)]
    full, route = clean_rfc("\n".join(lines), "full")
    assert route == "numbered" and full.startswith("   1  Introduction\n")
    nointro, _ = clean_rfc("\n".join(lines), "nointro")
    assert nointro.startswith("   2  The problem\n")


def test_later_headings_may_sit_off_section_1s_indentation_but_list_items_do_not_count():
    lines = ["   1. Introduction", "", *prose(1, 40), ""]
    lines += ["   2) The length field is followed by a", "      continuation line.", ""]
    lines += ["2. Halt Reason Codes", "", *prose(2, 40), "", "3. Scope", "", *prose(3, 40)]
    nointro, route = clean_rfc("\n".join(lines), "nointro")
    assert route == "nointro_section2" and nointro.startswith("2. Halt Reason Codes")


def test_a_numbered_list_late_in_an_unnumbered_rfc_is_not_section_1():
    lines = ["Status of this Memo", "", "   Boilerplate.", "", "Overview and Rationale", ""]
    lines += [*prose(1, 2000), "", "Examples", ""]
    lines += ["     1.  Closed", "", *prose(2, 10), "", "     2.  Open", "", *prose(3, 10)]
    full, route = clean_rfc("\n".join(lines), "full")
    assert route == "unnumbered_after_front_sections" and full.startswith("Overview and Rationale")
    nointro, route = clean_rfc("\n".join(lines), "nointro")
    assert route == "nointro_unnumbered_intro_dropped" and nointro.startswith("Examples")


def test_numbered_status_of_this_memo_is_front_matter():
    lines = ["1. Status of this Memo.", "", "   Boilerplate status text here.", ""]
    for k, name in enumerate(["Overview", "Details", "More"], 2):
        lines += [f"{k}. {name}", "", *prose(k, 40), ""]
    full, _ = clean_rfc("\n".join(lines), "full")
    nointro, _ = clean_rfc("\n".join(lines), "nointro")
    assert full.startswith("2. Overview")
    assert nointro.startswith("3. Details")


def test_unnumbered_rfc_drops_boilerplate_sections_and_a_leading_introduction():
    lines = [
        "Network Working Group                          A. Author",
        "Request for Comments: 900                      March 1984",
        "",
        "                  A Quokka Note",
        "",
        "Status of this Memo",
        "",
        "This memo is a note.  Distribution of this memo is unlimited.",
        "the status paragraph continues at column 0.",
        "",
        "Introduction",
        "",
        *prose(1, 40),
        "",
        "The Protocol",
        "",
        *prose(2, 40),
    ]
    full, route = clean_rfc("\n".join(lines), "full")
    assert route == "unnumbered_after_front_sections"
    assert full.startswith("Introduction")
    assert "unlimited" not in full and "column 0" not in full
    nointro, route = clean_rfc("\n".join(lines), "nointro")
    assert route == "nointro_unnumbered_intro_dropped"
    assert nointro.startswith("The Protocol")


def test_rfc_without_headings_drops_header_block_and_title():
    text = old_rfc(33, title="Quokka Host Status Report")
    full, route = clean_rfc(text, "full", title="Quokka host status report")
    assert route == "unnumbered_after_header_block"
    assert "QUOKKA HOST STATUS REPORT" not in full
    assert "Request for Comments" not in full and "NIC:" not in full
    assert len(full.split()) == 150
    nointro, route = clean_rfc(text, "nointro", title="Quokka host status report")
    assert (nointro, route) == (full, "nointro_unnumbered_kept")


def test_numbered_list_in_unnumbered_rfc_is_not_taken_for_sections():
    lines = [
        "Status of this Memo",
        "",
        "   Boilerplate.",
        "",
        "Discussion",
        "",
        "   1. The sender picks a value.  The receiver echoes it back to the",
        "      sender after a delay.",
        "",
        "   2. The sender compares the values.  A mismatch is an error for the",
        "      session.",
        "",
        *prose(3, 40),
    ]
    full, route = clean_rfc("\n".join(lines), "full")
    assert route == "unnumbered_after_front_sections"
    assert full.startswith("Discussion")


def test_long_ipr_content_section_is_kept_but_ipr_boilerplate_goes():
    boiler = [
        "9.  Intellectual Property Statement",
        "",
        "   The IETF takes no position regarding the validity or scope of any",
        "   intellectual property rights.",
        "",
    ]
    content = [
        "10.  Intellectual Property Rights",
        "",
        "   The IETF takes no position regarding the validity or scope of any rights;",
        *prose(5, 500),
        "",
    ]
    lines = ["1.  Introduction", "", *prose(4, 40), "", "2.  Notices", "", *prose(6, 20), ""]
    body, _ = clean_rfc("\n".join(lines + boiler + content), "full")
    assert "Intellectual Property Statement" not in body
    assert "10.  Intellectual Property Rights" in body
    assert "2.  Notices" in body  # a "Notices" section without boilerplate wording is content


# ---------------------------------------------------------------------------------- bad inputs


def test_each_bad_file_is_a_counted_skip_naming_the_file(tmp_path):
    d = tmp_path / "RFC" / "experimental"
    write_rfc(d, 1, nroff_rfc(1))
    (d / "rfc2.json").write_text('{"title": "broken", ')
    (d / "rfc3.json").write_text("[1, 2, 3]")
    write_rfc(d, 4, nroff_rfc(4), abstract=None, title=None)
    write_rfc(d, 5, "")
    write_rfc(d, 6, None)
    write_rfc(d, 7, nroff_rfc(7))
    (d / "rfc7.txt.gz").write_bytes(b"not gzip at all")
    (d / "rfc8.json").write_bytes(b'{"title": "caf\xe9"}')
    write_rfc(d, 9, "   too short to be a document\n")
    write_rfc(d, 10, nroff_rfc(10))
    intact = gzip.compress(nroff_rfc(10).encode())
    # a valid gzip header over a damaged deflate stream: zlib.error, not OSError
    (d / "rfc10.txt.gz").write_bytes(intact[:10] + b"\xff" * 8 + intact[18:])
    pairs, _, tally = corpora.read_rfc_pairs([d], "nointro")

    assert [p.id for p in pairs] == ["rfc1"]
    assert tally.skipped == {
        "invalid_json": 3,
        "no_abstract_or_title": 1,
        "body_under_100_words": 2,
        "no_text_file": 1,
        "unreadable_text": 2,
    }
    examples = json.dumps(tally.examples)
    for name in ("rfc2.json", "rfc3.json", "rfc4.json", "rfc5.json", "rfc6.txt", "rfc7.txt.gz"):
        assert name in examples, name
    assert "rfc8.json" in examples and "rfc9.json" in examples and "rfc10.txt.gz" in examples


def test_missing_fields_fall_back_and_are_counted(tmp_path):
    d = tmp_path / "experimental"
    write_rfc(d, 10, nroff_rfc(10), abstract="   ", obsoletes=None, obsoleted_by="RFC0001")
    write_rfc(d, 11, nroff_rfc(11), abstract=None, obsoletes=[7, None, "RFC0009", "junk"])
    pairs, links, tally = corpora.read_rfc_pairs([d], "full")
    assert [p.query for p in pairs] == ["Quokka Protocol 10", "Quokka Protocol 11"]
    assert tally.notes["query_is_title"] == 2
    assert links == [("rfc11", "rfc9")]
    assert not tally.skipped


def test_non_utf8_text_is_decoded_as_cp1252_and_counted(tmp_path):
    d = tmp_path / "experimental"
    raw = nroff_rfc(12).replace("Protocol Overview", "\u201cQuoted\u201d Overview").encode("cp1252")
    write_rfc(d, 12, raw)
    pairs, _, tally = corpora.read_rfc_pairs([d], "nointro")
    assert pairs[0].text.startswith("2.  \u201cQuoted\u201d Overview")
    assert tally.notes["text_decoded_as_cp1252"] == 1


def test_plain_txt_is_read_and_duplicates_keep_the_first(tmp_path):
    first, second = tmp_path / "experimental", tmp_path / "old" / "experimental"
    write_rfc(first, 13, None)
    (first / "rfc13.txt").write_text(nroff_rfc(13))
    write_rfc(second, 13, nroff_rfc(13), abstract="another abstract")
    pairs, _, tally = corpora.read_rfc_pairs([first, second], "full")
    assert len(pairs) == 1 and pairs[0].query.startswith("Quokka abstract number 13")
    assert tally.skipped == {"duplicate_id": 1}


def test_malformed_tree_builds_a_dataset_with_skips_in_stats(tmp_path, rfc_dir):
    exp = rfc_dir / "experimental"
    (exp / "rfc1100.json").write_text("{")
    write_rfc(exp, 1101, "")
    out = prepare_rfc(package_set="experimental", rfc_dir=rfc_dir, out_root=tmp_path / "out")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["skipped"] == {"body_under_100_words": 1, "invalid_json": 1}
    assert stats["skipped_total"] == 2
    assert stats["all"]["pairs"] == 60


# -------------------------------------------------------------------------------------- splits


def group_pairs(n_groups: int = 300) -> tuple[list[Pair], list[tuple[str, str]], list[list[str]]]:
    """Chains of 1-3 documents, joined by links or by a shared query."""
    pairs, links, groups = [], [], []
    for g in range(n_groups):
        ids = [f"d{g}-{k}" for k in range(1 + g % 3)]
        shared = g % 2 == 0
        for k, doc_id in enumerate(ids):
            pairs.append(Pair(doc_id, f"query {g}" if shared else f"query {g}/{k}", "text"))
        if not shared:
            links += list(zip(ids, ids[1:], strict=False))
        groups.append(ids)
    return pairs, links, groups


def test_splits_keep_linked_and_same_query_documents_together():
    pairs, links, groups = group_pairs()
    splits = assign_splits(pairs, links)
    for ids in groups:
        assert len({splits[i] for i in ids}) == 1, ids
    share = {s: list(splits.values()).count(s) / len(pairs) for s in ("train", "dev", "test")}
    assert 0.6 < share["train"] < 0.8 and 0.05 < share["dev"] < 0.15
    assert 0.13 < share["test"] < 0.27


def test_splits_are_deterministic_and_order_free():
    pairs, links, _ = group_pairs()
    shuffled = pairs[:]
    random.Random(0).shuffle(shuffled)
    assert assign_splits(pairs, links) == assign_splits(shuffled, links[::-1])
    # a document's split does not depend on unrelated documents
    alone = assign_splits(
        pairs[:10], [link for link in links if link[0] in {p.id for p in pairs[:10]}]
    )
    everything = assign_splits(pairs, links)
    assert all(everything[i] == s for i, s in alone.items() if i.startswith("d0-"))


def test_an_absent_link_endpoint_still_joins():
    pairs = [Pair(f"rfc{n}", f"q{n}", "t") for n in range(200)]
    links = [(f"rfc{n}", "rfc99999") for n in range(0, 200, 7)]
    splits = assign_splits(pairs, links)
    assert len({splits[f"rfc{n}"] for n in range(0, 200, 7)}) == 1


def test_bad_fractions_are_refused():
    with pytest.raises(ValueError, match="dev \\+ test < 1"):
        assign_splits([Pair("a", "q", "t")], dev=0.5, test=0.5)


# ---------------------------------------------------------------------------------- the output


def read_jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def check_beir(split_dir: Path) -> tuple[dict, dict, dict]:
    corpus = read_jsonl(split_dir / "corpus.jsonl")
    queries = read_jsonl(split_dir / "queries.jsonl")
    assert all(set(row) == {"_id", "title", "text"} for row in corpus)
    assert all(set(row) == {"_id", "text"} for row in queries)
    docs = {row["_id"]: row["text"] for row in corpus}
    qs = {row["_id"]: row["text"] for row in queries}
    assert len(docs) == len(corpus) and len(qs) == len(queries)  # unique ids
    assert len(set(qs.values())) == len(qs)  # one id per query text
    lines = (split_dir / "qrels" / "test.tsv").read_text().splitlines()
    assert lines[0] == "query-id\tcorpus-id\tscore"
    qrels: dict[str, set[str]] = {}
    for line in lines[1:]:
        qid, doc_id, score = line.split("\t")
        assert qid in qs and doc_id in docs and score == "1"
        qrels.setdefault(qid, set()).add(doc_id)
    assert set(qrels) == set(qs)
    assert set().union(*qrels.values()) == set(docs)  # every document is some query's positive
    return docs, qs, qrels


def test_dataset_layout_and_files_are_well_formed(tmp_path, rfc_dir):
    out = prepare_rfc(package_set="experimental", rfc_dir=rfc_dir, out_root=tmp_path / "out")
    assert out == tmp_path / "out" / "rfc-nointro-experimental"
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == [out.name]  # no temp dirs
    train = read_jsonl(out / "train.jsonl")
    assert all(set(row) == {"query", "positive", "id"} for row in train)
    ids = {"train": {row["id"] for row in train}}
    for split in ("dev", "test"):
        docs, qs, qrels = check_beir(out / split)
        ids[split] = set(docs)
    assert not (ids["train"] & ids["dev"] or ids["train"] & ids["test"] or ids["dev"] & ids["test"])
    assert set().union(*ids.values()) == {f"rfc{n}" for n in range(1000, 1060)}
    assert all(ids.values()), "the fixture should fill every split"

    split_of = {i: s for s, members in ids.items() for i in members}
    assert len({split_of[f"rfc{n}"] for n in (1001, 1002, 1003)}) == 1
    assert split_of["rfc1040"] == split_of["rfc1050"]

    stats = json.loads((out / "stats.json").read_text())
    assert {s: stats["splits"][s]["pairs"] for s in ids} == {s: len(m) for s, m in ids.items()}
    assert stats["packages"] == ["doc-rfc-experimental"] and stats["skipped_total"] == 0
    assert stats["all"]["doc_words_median"] > 100
    assert stats["notes"]["nointro_section2"] == 60


def test_identical_queries_share_one_query_id(tmp_path):
    pairs = [Pair("rfc1", "same  query", "a " * 200), Pair("rfc2", "same query", "b " * 200)]
    pairs.append(Pair("rfc3", "other", "c " * 200))
    split_dir = tmp_path / "test"
    assert corpora._write_beir(split_dir, pairs) == 2
    _, qs, qrels = check_beir(split_dir)
    assert qrels == {"q-rfc1": {"rfc1", "rfc2"}, "q-rfc3": {"rfc3"}}
    assert qs["q-rfc1"] == "same query"  # whitespace-normalised


def test_build_is_deterministic_and_reused(tmp_path, rfc_dir, monkeypatch):
    a = prepare_rfc("full", "experimental", rfc_dir, tmp_path / "a")
    b = prepare_rfc("full", "experimental", rfc_dir, tmp_path / "b")
    files = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files:
        if rel.name != "stats.json":  # holds the source path
            assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel

    def fail(*args, **kwargs):
        raise AssertionError("a complete dataset must be reused, not rebuilt")

    monkeypatch.setattr(corpora, "read_rfc_pairs", fail)
    assert prepare_rfc("full", "experimental", rfc_dir, tmp_path / "a") == a


def test_stale_dataset_is_rebuilt(tmp_path, rfc_dir):
    out = prepare_rfc("full", "experimental", rfc_dir, tmp_path)
    stats = json.loads((out / "stats.json").read_text())
    (out / "stats.json").write_text(json.dumps(stats | {"build_version": -1}))
    (out / "leftover").write_text("x")
    assert prepare_rfc("full", "experimental", rfc_dir, tmp_path) == out
    assert not (out / "leftover").exists()
    assert json.loads((out / "stats.json").read_text())["build_version"] == corpora.BUILD_VERSION


def test_a_failed_write_leaves_nothing_behind(tmp_path, rfc_dir, monkeypatch):
    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(corpora, "_write_beir", boom)
    with pytest.raises(OSError, match="disk full"):
        prepare_rfc("full", "experimental", rfc_dir, tmp_path / "out")
    assert list((tmp_path / "out").iterdir()) == []


# ----------------------------------------------------------------------- where the files come from


def test_rfc_dir_missing_a_package_directory_is_a_clear_error(tmp_path, rfc_dir):
    with pytest.raises(CorpusUnavailable, match=r"lacks rfc\*\.json in \['historic'"):
        prepare_rfc(package_set="small", rfc_dir=rfc_dir, out_root=tmp_path)


def test_installed_files_are_used_before_the_cache(tmp_path, rfc_dir, monkeypatch):
    monkeypatch.setattr(corpora, "SYSTEM_RFC_DIR", rfc_dir)
    out = prepare_rfc(package_set="experimental", out_root=tmp_path / "out")
    assert json.loads((out / "stats.json").read_text())["source"] == str(rfc_dir)


def test_no_files_and_no_fetch_says_how_to_get_them(tmp_path):
    with pytest.raises(CorpusUnavailable) as err:
        prepare_rfc(out_root=tmp_path)
    message = str(err.value)
    assert "network disabled in tests" in message
    assert "apt-get install doc-rfc-experimental doc-rfc-misc doc-rfc-fyi-bcp" in message
    assert "--rfc_dir" in message


def test_cache_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.setenv("LONGCL_CACHE", str(tmp_path / "c"))
    assert corpora.cache_dir() == tmp_path / "c"
    monkeypatch.delenv("LONGCL_CACHE")
    assert corpora.cache_dir() == Path.home() / ".cache" / "longcl"


def test_unknown_package_set_and_variant_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown package_set 'tiny'"):
        prepare_rfc(package_set="tiny", out_root=tmp_path)
    with pytest.raises(ValueError, match="unknown variant"):
        prepare_rfc(variant="abstract", out_root=tmp_path)


def test_private_sources_add_non_free_to_debian_entries_only():
    deb822 = (
        "Types: deb\nURIs: http://deb.debian.org/debian\nSuites: bookworm\n"
        "Components: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n\n"
        "Types: deb\nURIs: https://deb.nodesource.com/node_20.x\nSuites: nodistro\n"
        "Components: main\n\n"
        "Types: deb\nURIs: http://mirror.example/debian\nSuites: bookworm\n"
        "Components: main\nEnabled: no\n"
    )
    out = corpora._add_non_free_deb822(deb822)
    assert "Components: main non-free" in out
    assert "nodesource" not in out and "mirror.example" not in out
    assert corpora._add_non_free_deb822(out) == out  # already there: unchanged
    one_line = "deb http://deb.debian.org/debian bookworm main\n# comment\ndeb http://x.org/ a b\n"
    assert corpora._add_non_free_one_line(one_line) == (
        "deb http://deb.debian.org/debian bookworm main non-free\n"
    )


def test_apt_options_point_every_state_dir_into_the_cache(tmp_path):
    opts = corpora._apt_options(tmp_path)
    settings = dict(o.split("=", 1) for o in opts[1::2])
    assert settings["Dir::Etc::SourceList"] == "/dev/null"
    for key in ("Dir::Etc::SourceParts", "Dir::State::Lists", "Dir::Cache"):
        assert settings[key].startswith(str(tmp_path)), key


@pytest.mark.skipif(shutil.which("dpkg-deb") is None, reason="needs dpkg-deb")
def test_unpack_deb_keeps_only_matching_regular_files(tmp_path):
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN" / "control").write_text(
        "Package: fake\nVersion: 1\nArchitecture: all\nMaintainer: x <x@example.org>\n"
        "Description: test\n"
    )
    docs = pkg / "usr/share/doc/RFC/experimental"
    docs.mkdir(parents=True)
    (docs / "rfc1.json").write_text("{}")
    (docs / "rfc1.txt.gz").write_bytes(gzip.compress(b"text"))
    (docs / "rfc1.html").write_text("<html>")
    (pkg / "usr/share/doc/RFC/links").mkdir()
    (pkg / "usr/share/doc/RFC/links/rfc1.json").symlink_to("../experimental/rfc1.json")
    deb = tmp_path / "fake.deb"
    subprocess.run(
        ["dpkg-deb", "--build", "--root-owner-group", str(pkg), str(deb)],
        check=True,
        capture_output=True,
    )
    dest = tmp_path / "out"
    assert corpora._unpack_deb(deb, dest, corpora.RFC_PATTERNS) == 2
    found = sorted(str(p.relative_to(dest)) for p in dest.rglob("*") if not p.is_dir())
    assert found == [
        "usr/share/doc/RFC/experimental/rfc1.json",
        "usr/share/doc/RFC/experimental/rfc1.txt.gz",
    ]


def test_main_builds_from_the_command_line(tmp_path, rfc_dir, capsys):
    out = corpora.main(
        [
            "--variant",
            "full",
            "--package_set",
            "experimental",
            "--rfc_dir",
            str(rfc_dir),
            "--out_root",
            str(tmp_path),
        ]
    )
    assert out == tmp_path / "rfc-full-experimental"
    assert capsys.readouterr().out.strip().endswith(str(out))
    assert len(read_jsonl(out / "train.jsonl")) > 20
    with pytest.raises(SystemExit):
        corpora.main(["--variant", "abstract"])


# ------------------------------------------------------------------------------------ man pages

needs_groff = pytest.mark.skipif(shutil.which("groff") is None, reason="needs groff (groff-base)")


@pytest.fixture(autouse=True)
def no_installed_packages(tmp_path, monkeypatch):
    """Never read the machine's dpkg database, /usr/share/man or /usr/share/doc."""
    monkeypatch.setattr(corpora, "SYSTEM_ROOT", tmp_path / "no-system-root")


def roff_page(
    name: str, description: str, seed: int, n_words: int = 80, section: str = "3", **parts
) -> str:
    """A man(7) page: .TH, NAME ("name \\- description"), SYNOPSIS, DESCRIPTION of prose.

    parts: `hint` (first line), `name_line` (replaces NAME's text), `before` / `after` (roff
    placed before NAME / after DESCRIPTION).
    """
    name_line = parts.get("name_line", f"{name} \\- {description}")
    lines = [
        parts.get("hint", '.\\" a synthetic page'),
        f'.TH {name.upper()} {section} 2024-01-01 "Quokka 1.0" "Quokka Manual"',
        parts.get("before", ""),
        ".SH NAME",
        name_line,
        ".SH SYNOPSIS",
        ".nf",
        f".BI int\\ {name}(int\\ burrow );",
        ".fi",
        ".SH DESCRIPTION",
        *prose(seed, n_words, indent=""),
        parts.get("after", ""),
    ]
    return "\n".join(ln for ln in lines if ln) + "\n"


def write_page(man_dir: Path, file_name: str, text: str | bytes, compress: bool = True) -> Path:
    section = re.match(r".*\.(\d)", file_name).group(1)
    path = man_dir / f"man{section}" / (file_name + (".gz" if compress else ""))
    path.parent.mkdir(parents=True, exist_ok=True)
    data = text.encode() if isinstance(text, str) else text
    path.write_bytes(gzip.compress(data) if compress else data)
    return path


POSIX_PROLOG = ".SH PROLOG\nThis manual page is part of the Quokka Programmer's Manual."
TABLE = "'\\\" t"
ROFF_TABLE = ".TS\nallbox;\nl l.\nflag\tmeaning\nQK_FAST\tdig quickly\n.TE"


@pytest.fixture
def man_dir(tmp_path) -> Path:
    """A /usr/share/man shaped tree: 24 good pages, one description shared by a Linux and a
    POSIX page, and one page of each kind that must be skipped."""
    d = tmp_path / "man"
    for k in range(1, 20):
        write_page(d, f"quokka_{k}.3", roff_page(f"quokka_{k}", f"quokka operation {k}", k))
    # names broken by a paragraph before the description, as in some OpenSSL pages
    split = roff_page(
        "quokka_0", "", 0, name_line="quokka_0,\n.PP\nquokka_0b \\- quokka operation 0"
    )
    write_page(d, "quokka_0.3", split)
    # the Linux and the POSIX page of one function share a description
    linux = roff_page("qopen", "open a quokka burrow", 100, hint=TABLE, after=ROFF_TABLE)
    write_page(d, "qopen.3", linux)
    posix = roff_page(
        "qopen",
        "",
        101,
        section="3POSIX",
        hint="'\\\" et",
        name_line="qopen\n\\(em open a quokka burrow",
        before=POSIX_PROLOG,
        after=".SH COPYRIGHT\nPortions of this text are reprinted from a standard.",
    )
    write_page(d, "qopen.3posix", posix)
    latin = roff_page("qlatin", "latin quokka", 102, after="Written by Andr\xe9 M\xfcller.")
    write_page(d, "qlatin.3", latin.encode("cp1252"))
    # pod2man style: "--", and a second paragraph in NAME
    name_line = "Quokka::Dig -- dig\n.PP\nThis pod note is no description."
    perl_style = roff_page("Quokka::Dig", "", 103, section="3perl", name_line=name_line)
    write_page(d, "Quokka::Dig.3perl", perl_style, compress=False)
    # to be skipped
    write_page(d, "qalias.3", '.\\" an alias\n.so man3/qopen.3\n')
    write_page(d, "qnoname.3", roff_page("qnoname", "x", 104).replace(".SH NAME", ".SH TITLE"))
    write_page(d, "qnosep.7", roff_page("qnosep", "", 105, name_line="qnosep without a dash"))
    (d / "man3" / "qbroken.3.gz").write_bytes(b"\x1f\x8b not really gzip")
    return d


@needs_groff
def test_man_pages_render_to_plain_text_without_name_and_boilerplate(man_dir):
    files = sorted(p for p in man_dir.rglob("*") if p.is_file())
    pairs, tally = corpora.read_man_pairs(files)
    by_id = {p.id: p for p in pairs}
    assert sorted(by_id) == sorted(
        [f"quokka_{k}.3" for k in range(20)]
        + ["qopen.3", "qopen.3posix", "qlatin.3", "Quokka::Dig.3perl"]
    )
    assert tally.skipped == {
        "so_alias_stub": 1,
        "no_name_section": 1,
        "no_name_description": 1,
        "unreadable_file": 1,
    }
    assert by_id["qopen.3"].query == by_id["qopen.3posix"].query == "open a quokka burrow"
    assert by_id["Quokka::Dig.3perl"].query == "dig"
    assert by_id["quokka_0.3"].query == "quokka operation 0"
    assert "pod note" not in by_id["Quokka::Dig.3perl"].text

    linux, posix = by_id["qopen.3"].text, by_id["qopen.3posix"].text
    assert linux.startswith("SYNOPSIS\n       int qopen(int burrow);")
    assert "NAME" not in linux and "quokka burrow" not in linux  # no string match to the query
    assert "QOPEN(3)" not in linux and "Quokka 1.0" not in linux  # running header and footer
    assert "|QK_FAST | dig quickly |" in linux  # a table keeps its cells, not its rules
    assert not re.search(r"[\u2010\u2212\u2500-\u257f\x08\x1b]", linux)
    assert "PROLOG" not in posix and "COPYRIGHT" not in posix and "reprinted" not in posix
    assert tally.notes == {
        "dropped_section_COPYRIGHT": 1,
        "dropped_section_PROLOG": 1,
        "text_decoded_as_cp1252": 1,
    }
    assert "Written by André Müller." in by_id["qlatin.3"].text


@needs_groff
def test_render_man_gives_ascii_dashes_and_keeps_non_ascii_letters():
    page = roff_page("qdash", "dashes", 1, after="Use \\-\\-quokka-mode or -q, says G\u00fcnther.")
    text = corpora.render_man(page)
    assert "Use --quokka-mode or -q, says Günther." in text


def test_groff_failures_are_counted_skips(man_dir, monkeypatch):
    def hang(source):
        raise subprocess.TimeoutExpired("groff", corpora.GROFF_TIMEOUT_S)

    monkeypatch.setattr(corpora, "render_man", hang)
    pairs, tally = corpora.read_man_pairs(sorted(man_dir.glob("man3/quokka_*")))
    assert pairs == [] and tally.skipped == {"groff_timeout": 20}
    assert len(tally.examples["groff_timeout"]) == 5  # examples stay few across workers


def test_so_stubs_are_recognised_past_comments():
    assert corpora.is_so_stub('.\\" alias\n\n.so man3/qopen.3\n')
    assert corpora.is_so_stub("'\\\" t\n.so man3/qopen.3")
    assert not corpora.is_so_stub(".so man3/qopen.3\n.SH NAME\nx \\- y\n")
    assert not corpora.is_so_stub(roff_page("qopen", "open", 1))


@needs_groff
def test_man_dataset_keeps_a_shared_description_in_one_split(tmp_path, man_dir):
    out = corpora.prepare_manpages(out_root=tmp_path / "out", pages_dir=man_dir)
    assert out == tmp_path / "out" / "man"
    split_of = {row["id"]: "train" for row in read_jsonl(out / "train.jsonl")}
    for split in ("dev", "test"):
        docs, qs, qrels = check_beir(out / split)
        split_of.update(dict.fromkeys(docs, split))
        shared = [q for q, ids in qrels.items() if {"qopen.3", "qopen.3posix"} & ids]
        assert all(qrels[q] == {"qopen.3", "qopen.3posix"} for q in shared)
    assert split_of["qopen.3"] == split_of["qopen.3posix"]
    assert len(split_of) == 24 and len(set(split_of.values())) == 3

    stats = json.loads((out / "stats.json").read_text())
    assert stats["corpus"] == "man" and stats["corpus_version"] == corpora.MAN_VERSION
    assert stats["source"] == str(man_dir) and stats["skipped_total"] == 4
    assert stats["all"]["pairs"] == 24 and stats["all"]["queries"] == 23
    assert 80 < stats["all"]["doc_words_median"] < 120  # 80 words of prose + the synopsis


def write_dpkg_list(root: Path, package: str, paths: list[str]) -> None:
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    (info / f"{package}.list").write_text("\n".join(["/.", "/usr/share/man", *paths]) + "\n")


@needs_groff
def test_installed_man_packages_are_used_before_the_cache(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setattr(corpora, "SYSTEM_ROOT", root)
    man = root / "usr/share/man"
    for k, package in enumerate(corpora.MAN_PACKAGES):
        page = write_page(man, f"qpkg{k}.3", roff_page(f"qpkg{k}", f"package page {k}", k))
        alias = man / "man3" / f"qalias{k}.3.gz"
        alias.symlink_to(page.name)
        paths = [f"/{page.relative_to(root)}", f"/{alias.relative_to(root)}"]
        write_dpkg_list(root, package, paths)
    write_page(man, "qother.3", roff_page("qother", "another package's page", 9))

    out = corpora.prepare_manpages(out_root=tmp_path / "out")
    assert json.loads((out / "stats.json").read_text())["source"] == "installed packages"
    ids = [row["id"] for row in read_jsonl(out / "train.jsonl")]
    ids += [row["_id"] for s in ("dev", "test") for row in read_jsonl(out / s / "corpus.jsonl")]
    assert sorted(ids) == [f"qpkg{k}.3" for k in range(4)]  # not the aliases, nor qother.3


def test_man_pages_missing_and_unfetchable_say_how_to_get_them(tmp_path, monkeypatch):
    root = tmp_path / "root"
    monkeypatch.setattr(corpora, "SYSTEM_ROOT", root)
    # installed, but dpkg left the pages out (path-exclude): still needs a fetch
    write_dpkg_list(root, "manpages-dev", ["/usr/share/man/man3/qgone.3.gz"])
    with pytest.raises(CorpusUnavailable) as err:
        corpora.prepare_manpages(out_root=tmp_path / "out")
    message = str(err.value)
    assert "network disabled in tests" in message
    assert "apt-get install manpages-dev perl-doc libssl-doc manpages-posix-dev" in message
    assert "--pages_dir" in message
    with pytest.raises(CorpusUnavailable, match="holds no man\\*/ page files"):
        corpora.prepare_manpages(out_root=tmp_path / "out", pages_dir=tmp_path)


def test_man_pages_need_groff(tmp_path, man_dir, monkeypatch):
    monkeypatch.setattr(corpora.shutil, "which", lambda name: None)
    with pytest.raises(CorpusUnavailable, match="groff is not installed"):
        corpora.prepare_manpages(out_root=tmp_path / "out", pages_dir=man_dir)


def test_tally_merge_adds_counts_and_keeps_five_examples():
    total, part = corpora.Tally(), corpora.Tally()
    for k in range(4):
        total.skip("bad", f"a{k}")
        part.skip("bad", f"b{k}")
    part.note("seen")
    total.merge(part)
    assert total.skipped == {"bad": 8} and total.notes == {"seen": 1}
    assert total.examples["bad"] == ["a0", "a1", "a2", "a3", "b0"]


# ---------------------------------------------------------------------------------- kernel docs


def rst_page(title: str, seed: int, n_words: int = 320, overline: bool = False, extra="") -> str:
    """A kernel-doc shaped reST page: SPDX line, label, title, prose, a code block."""
    rule = "=" * len(title)
    head = [rule, title, rule] if overline else [title, rule]
    lines = [
        ".. SPDX-License-Identifier: GPL-2.0",
        "",
        f".. _quokka_{seed}:",
        "",
        *head,
        "",
        *prose(seed, n_words, indent=""),
        "",
        "Example::",
        "",
        "\tquokka_dig(burrow);",
        "",
        extra,
    ]
    return "\n".join(lines) + "\n"


def write_rst(docs: Path, rel: str, text: str | bytes) -> None:
    path = docs / f"{rel}.rst.gz"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(text.encode() if isinstance(text, str) else text))


@pytest.fixture
def kernel_dir(tmp_path) -> Path:
    """A Documentation/ shaped tree: 24 good pages (two sharing a title) and some to skip."""
    docs = tmp_path / "Documentation"
    for k in range(20):
        write_rst(docs, f"quokka/page{k}", rst_page(f"Quokka subsystem {k}", k))
    write_rst(docs, "index", rst_page("Quokka documentation", 20, overline=True))
    write_rst(docs, "a/intro", rst_page("Introduction", 21))
    write_rst(docs, "b/intro", rst_page("Introduction", 22, overline=True))
    write_rst(docs, "latin", rst_page("Caf\xe9 quokkas", 23).encode("cp1252"))
    # to be skipped
    write_rst(docs, "translations/it_IT/index", rst_page("Documentazione", 24))
    write_rst(docs, "short", rst_page("Short page", 25, n_words=40))
    write_rst(docs, "untitled", "\n".join(prose(26, 400, indent="")))
    (docs / "broken.rst.gz").write_bytes(b"not gzip")
    return docs


KREF_LIKE = """\
.. SPDX-License-Identifier: GPL-2.0

.. _kref:

.. Internal note that
   spans two lines.

=======================
  Quokka reference API
=======================

:Author: A. Quokka

.. toctree::
   :maxdepth: 1

   dig
   burrow

Intro text [#f1]_ here.

.. kernel-doc:: include/linux/quokka.h
   :internal:

Usage
-----

.. code-block:: c

        quokka_get(q);

.. note::

   Keep the burrow clean.

.. [#f1] A footnote.
"""


def test_clean_kernel_rst_drops_markup_but_keeps_prose_and_code():
    title, body = corpora.clean_kernel_rst(KREF_LIKE)
    assert title == "Quokka reference API"
    assert nonblank(body) == [
        ":Author: A. Quokka",
        "Intro text [#f1]_ here.",
        "Usage",
        ".. code-block:: c",
        "        quokka_get(q);",
        ".. note::",
        "   Keep the burrow clean.",
        ".. [#f1] A footnote.",
    ]


@pytest.mark.parametrize(
    "text, title, body",
    [
        ("Plain title\n###########\n\nText.\n", "Plain title", ["Text."]),
        ("\n****\nStars\n****\n\nText.\n", "Stars", ["Text."]),
        (
            "A ``quokka`` title\n~~~~~~~~~~~~~~~~~~\n\nFirst\n-----\n",
            "A ``quokka`` title",
            ["First"],
        ),
        (
            "A paragraph\nof two lines.\n\n  code\n  ----\n",
            None,
            ["A paragraph", "of two lines.", "  code", "  ----"],
        ),
        (
            "   Inset without overline\n   ========\n",
            None,
            ["   Inset without overline", "   ========"],
        ),
    ],
)
def test_the_first_rst_title_is_the_query(text, title, body):
    got_title, got_body = corpora.clean_kernel_rst(text)
    assert got_title == title and nonblank(got_body) == body


def test_kernel_pages_skips_and_notes(kernel_dir):
    pairs, tally = corpora.read_kernel_pairs(kernel_dir)
    assert len(pairs) == 24
    assert tally.skipped == {
        "translation": 1,
        "under_300_words": 1,
        "no_title": 1,
        "unreadable_file": 1,
    }
    assert tally.notes == {"text_decoded_as_cp1252": 1}
    by_id = {p.id: p for p in pairs}
    assert by_id["latin"].query == "Café quokkas"
    page = by_id["index"].text
    assert "SPDX" not in page and "_quokka_20" not in page and "=====" not in page
    assert "quokka_dig(burrow);" in page
    assert "Quokka documentation" not in page  # the query is not a string match


def test_kernel_dataset_keeps_a_shared_title_in_one_split(tmp_path, kernel_dir):
    out = corpora.prepare_kernel_docs(out_root=tmp_path / "out", docs_dir=kernel_dir)
    assert out == tmp_path / "out" / "kernel"
    split_of = {row["id"]: "train" for row in read_jsonl(out / "train.jsonl")}
    for split in ("dev", "test"):
        docs, qs, qrels = check_beir(out / split)
        split_of.update(dict.fromkeys(docs, split))
    assert split_of["a/intro"] == split_of["b/intro"]
    assert len(split_of) == 24 and len(set(split_of.values())) == 3
    stats = json.loads((out / "stats.json").read_text())
    assert stats["all"]["pairs"] == 24 and stats["all"]["queries"] == 23
    assert stats["skipped_total"] == 4 and stats["corpus_version"] == corpora.KERNEL_VERSION


def test_kernel_dataset_is_reused_until_its_version_changes(tmp_path, kernel_dir, monkeypatch):
    out = corpora.prepare_kernel_docs(out_root=tmp_path, docs_dir=kernel_dir)
    (out / "leftover").write_text("x")
    assert corpora.prepare_kernel_docs(out_root=tmp_path, docs_dir=kernel_dir) == out
    assert (out / "leftover").exists()
    monkeypatch.setattr(corpora, "KERNEL_VERSION", corpora.KERNEL_VERSION + 1)
    assert corpora.prepare_kernel_docs(out_root=tmp_path, docs_dir=kernel_dir) == out
    assert not (out / "leftover").exists()
    assert json.loads((out / "stats.json").read_text())["corpus_version"] == corpora.KERNEL_VERSION


def test_installed_kernel_docs_are_used_before_the_cache(tmp_path, kernel_dir, monkeypatch):
    root = tmp_path / "root"
    shutil.copytree(kernel_dir, root / corpora.KERNEL_DOCS)
    monkeypatch.setattr(corpora, "SYSTEM_ROOT", root)
    out = corpora.prepare_kernel_docs(out_root=tmp_path / "out")
    stats = json.loads((out / "stats.json").read_text())
    assert stats["source"] == str(root / corpora.KERNEL_DOCS) and stats["all"]["pairs"] == 24


def test_kernel_docs_missing_and_unfetchable_say_how_to_get_them(tmp_path):
    with pytest.raises(CorpusUnavailable) as err:
        corpora.prepare_kernel_docs(out_root=tmp_path / "out")
    message = str(err.value)
    assert "network disabled in tests" in message
    assert "apt-get install linux-doc-6.1" in message and "--docs_dir" in message
    with pytest.raises(CorpusUnavailable, match="holds no .rst.gz files"):
        corpora.prepare_kernel_docs(out_root=tmp_path / "out", docs_dir=tmp_path)


# ------------------------------------------------------------------------------- command line


def test_main_builds_each_corpus_and_refuses_options_of_another(tmp_path, kernel_dir, capsys):
    out = corpora.main(
        ["--corpus", "kernel", "--docs_dir", str(kernel_dir), "--out_root", str(tmp_path)]
    )
    assert out == tmp_path / "kernel"
    assert capsys.readouterr().out.strip().endswith(str(out))
    for argv in (
        ["--corpus", "pdf"],
        ["--corpus", "man", "--variant", "full"],
        ["--corpus", "kernel", "--pages_dir", str(tmp_path)],
        ["--docs_dir", str(kernel_dir)],
    ):
        with pytest.raises(SystemExit):
            corpora.main(argv)
    assert "--variant is for --corpus rfc, not man" in capsys.readouterr().err

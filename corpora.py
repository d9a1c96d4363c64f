"""Retrieval datasets built from Debian documentation packages, deterministically, into a cache.

A builder turns one corpus into (query, positive document) pairs; the shared helpers below fetch
the Debian packages, split the pairs into train / dev / test so that no document (and no group of
linked documents) crosses splits, and write:

    <out_root>/<name>/train.jsonl                {"query", "positive", "id"} per line
    <out_root>/<name>/{dev,test}/corpus.jsonl    {"_id", "title", "text"}   (BEIR layout)
    <out_root>/<name>/{dev,test}/queries.jsonl   {"_id", "text"}
    <out_root>/<name>/{dev,test}/qrels/test.tsv  query-id, corpus-id, score
    <out_root>/<name>/stats.json                 sizes, skips by reason, word counts, packages

Corpora:
- rfc: IETF RFCs (the doc-rfc-* packages, Debian non-free): the query is the abstract (the title
  where there is none) and the document is the cleaned body.
- man: manual pages (manpages-dev, perl-doc, libssl-doc; manpages-posix-dev from non-free): the
  query is the NAME line's description and the document is the page rendered by groff, without
  its NAME section.
- kernel: Linux kernel documentation (linux-doc-6.1): the query is the page title and the
  document is the lightly cleaned reST source of a page of 300+ words.

Licence: RFC text may be redistributed only unmodified, and man pages and kernel docs come under
several licences, so every dataset is derived text that lives in the cache and must never be
committed.

Command line:
    python corpora.py [--corpus rfc|man|kernel] [--out_root DIR]
                      rfc:    [--variant nointro|full] [--package_set small|all|<package>]
                              [--rfc_dir DIR]
                      man:    [--pages_dir DIR]
                      kernel: [--docs_dir DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import fnmatch
import gzip
import hashlib
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

# bump when the output of any builder changes, so that stale cached datasets are rebuilt
BUILD_VERSION = 2
SPLIT_SALT = "longcl-split-v1"
MIN_BODY_WORDS = 100


class CorpusUnavailable(RuntimeError):
    """The source files of a corpus are neither given, nor installed, nor fetchable."""


def cache_dir() -> Path:
    """Root of everything this module writes: `$LONGCL_CACHE`, else `~/.cache/longcl`."""
    env = os.environ.get("LONGCL_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "longcl"


def log(msg: str) -> None:
    print(f"[corpora] {msg}", flush=True)


# ---------------------------------------------------------------------------------------------
# Shared: fetching Debian packages without root and without touching /etc/apt
# ---------------------------------------------------------------------------------------------

APT_SOURCES = (Path("/etc/apt/sources.list"), Path("/etc/apt/sources.list.d"))


def _add_non_free_deb822(text: str) -> str:
    """Keep the Debian stanzas of a deb822 .sources file, with `non-free` in `Components:`."""
    kept = []
    for stanza in re.split(r"\n\s*\n", text):
        lines = stanza.splitlines()
        uris = " ".join(ln for ln in lines if ln.lower().startswith("uris:"))
        enabled = not any(re.match(r"(?i)enabled:\s*no", ln) for ln in lines)
        # third-party repositories have no non-free component and may be unreachable
        if "debian" not in uris or not enabled:
            continue
        lines = [
            ln + " non-free"
            if ln.startswith("Components:") and "non-free" not in ln.split()
            else ln
            for ln in lines
        ]
        kept.append("\n".join(lines))
    return "\n\n".join(kept) + "\n" if kept else ""


def _add_non_free_one_line(text: str) -> str:
    """Keep the Debian `deb` lines of a one-line sources.list, with `non-free` appended."""
    kept = []
    for line in text.splitlines():
        words = line.split()
        if not words or words[0] != "deb" or "debian" not in line:
            continue
        kept.append(line if "non-free" in words else line + " non-free")
    return "\n".join(kept) + "\n" if kept else ""


def _write_private_sources(apt_root: Path) -> Path:
    sources = apt_root / "sources"
    if sources.exists():
        shutil.rmtree(sources)
    sources.mkdir(parents=True)
    system_list, system_dir = APT_SOURCES
    if system_list.is_file():
        text = _add_non_free_one_line(system_list.read_text())
        if text:
            (sources / "system.list").write_text(text)
    for path in sorted(system_dir.glob("*.sources")) if system_dir.is_dir() else []:
        text = _add_non_free_deb822(path.read_text())
        if text:
            (sources / path.name).write_text(text)
    if not any(sources.iterdir()):
        raise CorpusUnavailable(f"no Debian archive entry found in {system_list} or {system_dir}")
    return sources


def _apt_options(apt_root: Path) -> list[str]:
    opts = {
        "Dir::Etc::SourceList": "/dev/null",
        "Dir::Etc::SourceParts": apt_root / "sources",
        "Dir::State::Lists": apt_root / "lists",
        "Dir::Cache": apt_root / "cache",
        "Acquire::Languages": "none",
    }
    if os.geteuid() == 0:
        # as root apt downloads as user _apt, who cannot enter a private cache under /root;
        # it would fall back to root anyway, with a warning on every call
        opts["APT::Sandbox::User"] = "root"
    return [arg for key, value in opts.items() for arg in ("-o", f"{key}={value}")]


def _run(what: str, cmd: Sequence[str], cwd: Path | None = None) -> str:
    """Run `cmd`; its stderr on success, CorpusUnavailable naming `what` on failure."""
    try:
        proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, check=False)
    except FileNotFoundError as err:
        raise CorpusUnavailable(f"{cmd[0]} is not installed") from err
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip()[-1500:]
        raise CorpusUnavailable(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return proc.stderr


def _unpack_deb(deb: Path, dest: Path, patterns: Sequence[str]) -> int:
    """Unpack the regular files of `deb` whose path matches one of `patterns`; returns count.

    Reading `dpkg-deb --fsys-tarfile` with tarfile replaces `tar -x --wildcards`, which fails
    outright when one pattern matches nothing (some packages ship no plain .txt). Only
    regular files are written (no links), and only below `dest`.
    """
    proc = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(deb)], stdout=subprocess.PIPE)
    count = 0
    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
        for member in tar:
            name = member.name.removeprefix("./")
            if not member.isfile() or not any(fnmatch.fnmatch(name, p) for p in patterns):
                continue
            if name.startswith("/") or ".." in Path(name).parts:
                raise CorpusUnavailable(f"{deb}: unsafe path {member.name!r}")
            target = dest / name
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(tar.extractfile(member).read())
            count += 1
    if proc.wait() != 0:
        raise CorpusUnavailable(f"dpkg-deb could not read {deb}")
    return count


def _download(packages: Sequence[str], apt_root: Path) -> dict[str, Path]:
    """apt-get update + download into the private apt directory; returns {package: .deb}."""
    _write_private_sources(apt_root)
    for sub in ("lists/partial", "cache/archives/partial", "debs"):
        (apt_root / sub).mkdir(parents=True, exist_ok=True)
    opts = _apt_options(apt_root)
    log("apt-get update (private lists, non-free added)")
    # without network, update still exits 0; its warnings explain the failure that follows
    warnings = _run("apt-get update", ["apt-get", *opts, "update"]).strip()
    debs_dir = apt_root / "debs"
    for old in debs_dir.glob("*.deb"):
        old.unlink()
    log(f"apt-get download {' '.join(packages)}")
    try:
        _run("apt-get download", ["apt-get", *opts, "download", *packages], cwd=debs_dir)
    except CorpusUnavailable as err:
        raise CorpusUnavailable(f"{err}\napt-get update said:\n{warnings[-1500:]}") from err
    debs = {}
    for package in packages:
        found = sorted(debs_dir.glob(f"{package}_*.deb"))
        if len(found) != 1:
            raise CorpusUnavailable(f"apt-get download left {len(found)} files for {package}")
        debs[package] = found[0]
    return debs


def fetch_debian_packages(
    packages: Sequence[str], patterns: Sequence[str], cache: Path | None = None
) -> dict[str, dict]:
    """Download and unpack Debian packages into `<cache>/debian/<package>/`.

    Needs apt-get, dpkg-deb and network access to the Debian archive, not root: apt runs on a
    private copy of the machine's sources under `<cache>/apt` and /etc/apt is only read.
    Names are pinned, never versions (point releases replace them). A package dir is a
    filesystem tree holding only the files matching `patterns` (e.g.
    "usr/share/doc/RFC/*.json"), written to a temp dir and renamed, so it is complete or
    absent; complete ones are reused without network, the .deb is not kept.

    Returns {package: info} with info = {"root": Path, "version", "deb_bytes", "files"}.
    Raises CorpusUnavailable, with apt's message, when any step fails.
    """
    cache = cache or cache_dir()
    root = cache / "debian"
    root.mkdir(parents=True, exist_ok=True)
    infos, missing = {}, []
    for package in packages:
        marker = root / package / "unpacked.json"
        info = json.loads(marker.read_text()) if marker.is_file() else None
        if info and set(patterns) <= set(info["patterns"]):
            log(f"{package} {info['version']}: unpacked earlier, in {root / package}")
            infos[package] = info | {"root": root / package}
        else:
            missing.append(package)
    if missing:
        debs = _download(missing, cache / "apt")
        for package, deb in debs.items():
            infos[package] = _unpack_into_place(package, deb, root, patterns)
            deb.unlink()
    return infos


def _make_temp_dir(parent: Path, name: str) -> Path:
    """A fresh dir beside its final place `parent/name`, with umask permissions (not 0700)."""
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.", dir=parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)
    return tmp


def _unpack_into_place(package: str, deb: Path, root: Path, patterns: Sequence[str]) -> dict:
    version = deb.name.split("_")[1]
    tmp = _make_temp_dir(root, package)
    files = _unpack_deb(deb, tmp, patterns)
    info = {
        "package": package,
        "version": version,
        "deb_bytes": deb.stat().st_size,
        "files": files,
        "patterns": list(patterns),
    }
    (tmp / "unpacked.json").write_text(json.dumps(info, indent=1))
    final = root / package
    if final.exists():
        shutil.rmtree(final)
    os.rename(tmp, final)
    log(f"unpacked {package} {version}: {deb.stat().st_size / 1e6:.1f} MB .deb, {files} files")
    return info | {"root": final}


# ---------------------------------------------------------------------------------------------
# Shared: pairs, splits and the dataset writer
# ---------------------------------------------------------------------------------------------


@dataclass
class Pair:
    """One query and its positive document; `id` names the document, unique in a corpus."""

    id: str
    query: str
    text: str


@dataclass
class Tally:
    """Counts of skipped inputs (by reason) and of counted-but-kept events, with examples."""

    skipped: Counter = field(default_factory=Counter)
    notes: Counter = field(default_factory=Counter)
    examples: dict = field(default_factory=dict)

    def skip(self, reason: str, example: str) -> None:
        self.skipped[reason] += 1
        self.examples.setdefault(reason, [])
        if len(self.examples[reason]) < 5:
            self.examples[reason].append(example)

    def note(self, event: str) -> None:
        self.notes[event] += 1

    def merge(self, other: Tally) -> None:
        """Add the counts and examples of `other` (a tally kept by one worker) to these."""
        self.skipped.update(other.skipped)
        self.notes.update(other.notes)
        for reason, examples in other.examples.items():
            kept = self.examples.setdefault(reason, [])
            kept.extend(examples[: max(0, 5 - len(kept))])


def natural_key(doc_id: str) -> tuple:
    """Sort "rfc9" before "rfc10"."""
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", doc_id))


def normalize_query(text: str) -> str:
    return " ".join(text.split())


def decode_text(data: bytes, tally: Tally) -> str:
    """UTF-8, else cp1252 (undefined bytes replaced) with a counted note: never raises."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        # 28 of the 9,154 RFCs are cp1252 (curly quotes, accented names); keep them, counted
        tally.note("text_decoded_as_cp1252")
        return data.decode("cp1252", errors="replace")


# what reading a file that may be a broken gzip can raise
READ_ERRORS = (OSError, EOFError, zlib.error)


def read_maybe_gzipped(path: Path) -> bytes:
    """Bytes of `path`, decompressed when its name ends in .gz; one of READ_ERRORS if broken."""
    data = path.read_bytes()
    return gzip.decompress(data) if path.name.endswith(".gz") else data


def package_meta(infos: dict[str, dict]) -> dict:
    """What stats.json records about packages from `fetch_debian_packages`."""
    return {
        "source": "debian packages (cache)",
        "package_versions": {p: info["version"] for p, info in infos.items()},
        "download_bytes": sum(info["deb_bytes"] for info in infos.values()),
    }


class _UnionFind:
    def __init__(self) -> None:
        self.parent: dict[str, str] = {}

    def find(self, x: str) -> str:
        self.parent.setdefault(x, x)
        while self.parent[x] != x:
            self.parent[x] = self.parent[self.parent[x]]
            x = self.parent[x]
        return x

    def union(self, a: str, b: str) -> None:
        self.parent[self.find(a)] = self.find(b)


def _unit_interval(key: str) -> float:
    digest = hashlib.sha256(f"{SPLIT_SALT}/{key}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def assign_splits(
    pairs: Sequence[Pair],
    links: Iterable[tuple[str, str]] = (),
    dev: float = 0.1,
    test: float = 0.2,
) -> dict[str, str]:
    """Map each pair id to "train", "dev" or "test", deterministically.

    Documents joined by a link (e.g. one RFC obsoletes another) or by an identical query land
    in one split: connected components of a union-find, each assigned by a hash of its
    smallest member id, so the result depends on ids alone (no RNG, no input order). Link
    endpoints outside `pairs` still connect (two RFCs obsoleting a third absent one). Split
    sizes follow the fractions only on average, since whole components move together.
    """
    if not (0 <= dev and 0 <= test and dev + test < 1):
        raise ValueError(f"need 0 <= dev, test and dev + test < 1, got {dev=}, {test=}")
    uf = _UnionFind()
    by_query: dict[str, str] = {}
    for pair in pairs:
        uf.find(pair.id)
        first = by_query.setdefault(normalize_query(pair.query), pair.id)
        uf.union(pair.id, first)
    for a, b in links:
        uf.union(a, b)
    members: dict[str, list[str]] = {}
    for pair in pairs:
        members.setdefault(uf.find(pair.id), []).append(pair.id)
    splits = {}
    for ids in members.values():
        u = _unit_interval(min(ids, key=natural_key))
        split = "test" if u < test else "dev" if u < test + dev else "train"
        splits.update(dict.fromkeys(ids, split))
    return splits


def _percentile(values: Sequence[int], q: float) -> int:
    """Nearest-rank percentile; 0 for no values."""
    if not values:
        return 0
    ranked = sorted(values)
    return ranked[min(len(ranked) - 1, max(0, int(round(q * len(ranked) + 0.5)) - 1))]


def _write_jsonl(path: Path, rows: Iterable[dict]) -> None:
    with path.open("w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row, ensure_ascii=False) + "\n")


def _write_beir(split_dir: Path, pairs: Sequence[Pair]) -> int:
    """BEIR layout for one split; identical queries share one id. Returns the query count."""
    (split_dir / "qrels").mkdir(parents=True)
    # no title: it restates the query (it *is* the query where an RFC has no abstract)
    _write_jsonl(
        split_dir / "corpus.jsonl", ({"_id": p.id, "title": "", "text": p.text} for p in pairs)
    )
    groups: dict[str, list[str]] = {}
    for p in pairs:
        groups.setdefault(normalize_query(p.query), []).append(p.id)
    # a query is named after its first document, so its id is stable across rebuilds
    queries = sorted(
        ((f"q-{ids[0]}", text, ids) for text, ids in groups.items()),
        key=lambda q: natural_key(q[0]),
    )
    _write_jsonl(split_dir / "queries.jsonl", ({"_id": qid, "text": t} for qid, t, _ in queries))
    with (split_dir / "qrels" / "test.tsv").open("w", encoding="utf-8") as f:
        f.write("query-id\tcorpus-id\tscore\n")
        for qid, _, ids in queries:
            f.writelines(f"{qid}\t{doc_id}\t1\n" for doc_id in ids)
    return len(queries)


def _split_stats(pairs: Sequence[Pair], n_queries: int) -> dict:
    words = [len(p.text.split()) for p in pairs]
    return {
        "pairs": len(pairs),
        "queries": n_queries,
        "doc_words_median": int(statistics.median(words)) if words else 0,
        "doc_words_p90": _percentile(words, 0.9),
    }


def write_dataset(
    out_dir: Path,
    pairs: Sequence[Pair],
    links: Iterable[tuple[str, str]],
    tally: Tally,
    meta: dict,
) -> dict:
    """Split `pairs` and write the dataset to `out_dir` atomically; returns the stats.

    Everything goes to a temp dir beside `out_dir`, renamed into place at the end, so a reader
    sees a complete dataset or none. A dataset left by an older BUILD_VERSION is replaced.
    """
    ids = [p.id for p in pairs]
    if len(set(ids)) != len(ids):
        raise ValueError("pair ids must be unique")
    splits = assign_splits(pairs, links)
    by_split: dict[str, list[Pair]] = {"train": [], "dev": [], "test": []}
    for pair in sorted(pairs, key=lambda p: natural_key(p.id)):
        by_split[splits[pair.id]].append(pair)

    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = _make_temp_dir(out_dir.parent, out_dir.name)
    try:
        train = by_split["train"]
        _write_jsonl(
            tmp / "train.jsonl", ({"query": p.query, "positive": p.text, "id": p.id} for p in train)
        )
        n_queries = {"train": len({normalize_query(p.query) for p in train})}
        for split in ("dev", "test"):
            n_queries[split] = _write_beir(tmp / split, by_split[split])
        stats = {
            "build_version": BUILD_VERSION,
            **meta,
            "splits": {s: _split_stats(by_split[s], n_queries[s]) for s in by_split},
            "all": _split_stats(pairs, len({normalize_query(p.query) for p in pairs})),
            "skipped": dict(sorted(tally.skipped.items())),
            "skipped_total": sum(tally.skipped.values()),
            "notes": dict(sorted(tally.notes.items())),
            "skipped_examples": tally.examples,
        }
        (tmp / "stats.json").write_text(json.dumps(stats, indent=1) + "\n")
        _replace_dir(tmp, out_dir, meta.get("corpus_version"))
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return stats


def _replace_dir(tmp: Path, final: Path, corpus_version: int | None = None) -> None:
    if final.exists():
        stale = final.with_name(f".{final.name}.stale-{os.getpid()}")
        os.rename(final, stale)
        shutil.rmtree(stale)
    try:
        os.rename(tmp, final)
    except OSError:
        # another process finished the same dataset first; its copy is equally good
        if not _is_complete(final, corpus_version):
            raise


def _is_complete(out_dir: Path, corpus_version: int | None = None) -> bool:
    """Whether `out_dir` holds a dataset written by this BUILD_VERSION and `corpus_version`.

    `corpus_version` is a builder's own marker (None for the RFC builder, which has none), so
    that a change to one builder rebuilds only its datasets.
    """
    stats = out_dir / "stats.json"
    if not stats.is_file():
        return False
    try:
        written = json.loads(stats.read_text())
    except json.JSONDecodeError:
        return False
    return (
        written.get("build_version") == BUILD_VERSION
        and written.get("corpus_version") == corpus_version
    )


def _print_summary(name: str, stats: dict, seconds: float) -> None:
    s = stats["splits"]
    log(
        f"{name}: train {s['train']['pairs']} / dev {s['dev']['pairs']} / test "
        f"{s['test']['pairs']} pairs; doc words median {stats['all']['doc_words_median']}, "
        f"p90 {stats['all']['doc_words_p90']}; skipped {stats['skipped_total']} "
        f"{stats['skipped']}; {seconds:.1f} s"
    )


# ---------------------------------------------------------------------------------------------
# RFC builder
# ---------------------------------------------------------------------------------------------

# package -> its directories under /usr/share/doc/RFC (listed from the bookworm .debs)
RFC_PACKAGES: dict[str, tuple[str, ...]] = {
    "doc-rfc-experimental": ("experimental",),
    "doc-rfc-misc": ("historic", "old/historic"),
    "doc-rfc-fyi-bcp": ("best-current-practice", "for-your-information"),
    "doc-rfc-std": ("standard", "draft-standard"),
    "doc-rfc-std-proposed": ("proposed-standard",),
    "doc-rfc-informational": ("informational",),
    "doc-rfc-old-std": ("old/standard", "old/draft-standard", "old/proposed-standard"),
    "doc-rfc-others": (
        "unclassified",
        "old/unclassified",
        "old/experimental",
        "old/informational",
        "old/best-current-practice",
    ),
}
# small: ~1,000 pairs from 48.5 MB of .debs; all: ~8,000 pairs from 475 MB
RFC_PACKAGE_SETS: dict[str, tuple[str, ...]] = {
    "small": ("doc-rfc-experimental", "doc-rfc-misc", "doc-rfc-fyi-bcp"),
    "all": tuple(RFC_PACKAGES),
}
RFC_VARIANTS = ("nointro", "full")
RFC_PATTERNS = (
    "usr/share/doc/RFC/*.json",
    "usr/share/doc/RFC/*.txt.gz",
    # a few RFCs ship only an uncompressed .txt
    "usr/share/doc/RFC/*.txt",
)
SYSTEM_RFC_DIR = Path("/usr/share/doc/RFC")


def rfc_packages(package_set: str) -> tuple[str, ...]:
    """Packages of a named set ("small", "all") or of one package ("experimental")."""
    if package_set in RFC_PACKAGE_SETS:
        return RFC_PACKAGE_SETS[package_set]
    if f"doc-rfc-{package_set}" in RFC_PACKAGES:
        return (f"doc-rfc-{package_set}",)
    names = sorted(RFC_PACKAGE_SETS) + sorted(p.removeprefix("doc-rfc-") for p in RFC_PACKAGES)
    raise ValueError(f"unknown package_set {package_set!r}; choose from {names}")


def _missing_dirs(rfc_dir: Path, packages: Sequence[str]) -> list[str]:
    return [
        d for p in packages for d in RFC_PACKAGES[p] if not any((rfc_dir / d).glob("rfc*.json"))
    ]


def _rfc_source_dirs(packages: Sequence[str], rfc_dir: Path | None) -> tuple[list[Path], dict]:
    """Directories holding rfcN.json files, in a fixed order, and a description of the source.

    Order: an explicit `rfc_dir` (must hold every needed directory); else the installed
    /usr/share/doc/RFC when it does; else the cache, fetching what is missing.
    """
    if rfc_dir is not None:
        missing = _missing_dirs(rfc_dir, packages)
        if missing:
            raise CorpusUnavailable(
                f"--rfc_dir {rfc_dir} lacks rfc*.json in {missing} (needed by {list(packages)})"
            )
        return [rfc_dir / d for p in packages for d in RFC_PACKAGES[p]], {"source": str(rfc_dir)}
    if not _missing_dirs(SYSTEM_RFC_DIR, packages):
        dirs = [SYSTEM_RFC_DIR / d for p in packages for d in RFC_PACKAGES[p]]
        return dirs, {"source": str(SYSTEM_RFC_DIR)}
    try:
        infos = fetch_debian_packages(packages, RFC_PATTERNS)
    except CorpusUnavailable as err:
        raise CorpusUnavailable(
            f"{err}\n\nThe RFC files could not be fetched. Either install the packages "
            f"(`apt-get install {' '.join(packages)}`, from Debian's non-free component), or "
            "copy their /usr/share/doc/RFC somewhere and pass --rfc_dir DIR."
        ) from err
    dirs = [infos[p]["root"] / "usr/share/doc/RFC" / d for p in packages for d in RFC_PACKAGES[p]]
    return dirs, package_meta(infos)


def _rfc_id(value: str) -> str | None:
    """ "RFC0969" / "rfc969" -> "rfc969"; None for anything else."""
    m = re.fullmatch(r"(?i)rfc\s*0*(\d+)", value.strip())
    return f"rfc{m.group(1)}" if m else None


def _read_text(base: Path, tally: Tally) -> str | None:
    """Body of rfcN.txt.gz (or rfcN.txt); None, with a counted skip, when unreadable."""
    gz, plain = base.with_suffix(".txt.gz"), base.with_suffix(".txt")
    path = gz if gz.is_file() else plain
    if not path.is_file():
        tally.skip("no_text_file", str(base) + ".txt[.gz]")
        return None
    try:
        data = read_maybe_gzipped(path)
    except READ_ERRORS as err:
        tally.skip("unreadable_text", f"{path}: {err}")
        return None
    return decode_text(data, tally)


def _read_rfc_json(path: Path, tally: Tally) -> dict | None:
    try:
        meta = json.loads(path.read_bytes())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        tally.skip("invalid_json", f"{path}: {err}")
        return None
    if not isinstance(meta, dict):
        tally.skip("invalid_json", f"{path}: top level is {type(meta).__name__}, not an object")
        return None
    return meta


def _str_field(meta: dict, key: str) -> str:
    value = meta.get(key)
    return normalize_query(value) if isinstance(value, str) else ""


# "updates" would also be a reason to keep RFCs together, but across all eight packages it
# chains 921 RFCs (10%) into one component, which then decides a whole split on its own
RFC_LINK_FIELDS = ("obsoletes", "obsoleted_by")


def _links(meta: dict, doc_id: str) -> list[tuple[str, str]]:
    """Edges to the RFCs this one obsoletes or is obsoleted by."""
    edges = []
    for key in RFC_LINK_FIELDS:
        values = meta.get(key)
        for value in values if isinstance(values, list) else []:
            other = _rfc_id(value) if isinstance(value, str) else None
            if other:
                edges.append((doc_id, other))
    return edges


def read_rfc_pairs(
    dirs: Sequence[Path], variant: str
) -> tuple[list[Pair], list[tuple[str, str]], Tally]:
    """(abstract or title, cleaned body) pairs from the rfcN.json/.txt.gz files in `dirs`.

    Never raises on a bad file: each problem is a counted skip (reason, example file) in the
    returned Tally. A document id seen twice keeps its first occurrence in `dirs` order.
    """
    pairs, links, tally, seen = [], [], Tally(), set()
    paths = [
        p for d in dirs for p in sorted(d.glob("rfc*.json"), key=lambda p: natural_key(p.name))
    ]
    # about 10 ms per RFC: a bar for the 9,000 of "all" (tqdm hides itself off a terminal)
    for path in tqdm(paths, desc="RFCs", unit="doc", disable=None, leave=False):
        doc_id = _rfc_id(path.name.removesuffix(".json"))
        if doc_id is None:
            tally.skip("bad_file_name", str(path))
            continue
        if doc_id in seen:
            tally.skip("duplicate_id", str(path))
            continue
        seen.add(doc_id)
        meta = _read_rfc_json(path, tally)
        pair = _rfc_pair(path, meta, doc_id, variant, tally) if meta is not None else None
        if pair is not None:
            pairs.append(pair)
            links.extend(_links(meta, doc_id))
    return pairs, links, tally


def _rfc_pair(path: Path, meta: dict, doc_id: str, variant: str, tally: Tally) -> Pair | None:
    title, query = _str_field(meta, "title"), _str_field(meta, "abstract")
    if not query:
        query = title
        if not query:
            tally.skip("no_abstract_or_title", str(path))
            return None
        tally.note("query_is_title")
    raw = _read_text(path.with_suffix(""), tally)
    if raw is None:
        return None
    body, route = clean_rfc(raw, variant, title)
    tally.note(route)
    if len(body.split()) < MIN_BODY_WORDS:
        tally.skip(f"body_under_{MIN_BODY_WORDS}_words", str(path))
        return None
    return Pair(id=doc_id, query=query, text=body)


def prepare_rfc(
    variant: str = "nointro",
    package_set: str = "small",
    rfc_dir: str | Path | None = None,
    out_root: str | Path | None = None,
) -> Path:
    """Build (or reuse) the RFC retrieval dataset; returns its directory.

    variant: "nointro" (default) starts each body at the second content section, since the
    Introduction often restates the abstract (the query); "full" keeps the whole body after
    the front matter. package_set: "small" (experimental + misc + fyi-bcp, ~1,000 pairs,
    48.5 MB of downloads), "all" (the eight doc-rfc-* packages) or one package's suffix
    ("experimental"). The directory is `<out_root or cache_dir()>/rfc-<variant>-<package_set>`;
    an existing complete one is reused untouched, whatever `rfc_dir` says.
    """
    if variant not in RFC_VARIANTS:
        raise ValueError(f"unknown variant {variant!r}; choose from {RFC_VARIANTS}")
    packages = rfc_packages(package_set)
    name = f"rfc-{variant}-{package_set}"
    out_dir = Path(out_root or cache_dir()) / name
    if _is_complete(out_dir):
        log(f"{name}: reusing {out_dir}")
        return out_dir

    start = time.time()
    log(f"{name}: packages {', '.join(packages)}")
    dirs, source = _rfc_source_dirs(packages, Path(rfc_dir) if rfc_dir else None)
    log(f"reading RFCs from {source['source']}")
    pairs, links, tally = read_rfc_pairs(dirs, variant)
    log(f"parsed {len(pairs)} pairs; skipped {sum(tally.skipped.values())} {dict(tally.skipped)}")
    meta = {
        "name": name,
        "corpus": "rfc",
        "variant": variant,
        "package_set": package_set,
        "packages": list(packages),
        **source,
    }
    stats = write_dataset(out_dir, pairs, links, tally, meta)
    _print_summary(name, stats, time.time() - start)
    return out_dir


# ---------------------------------------------------------------------------------------------
# RFC text cleaning
#
# The plain-text RFCs span 1969-2023 and several formatting eras: nroff pages with form feeds,
# running headers ("RFC 1234   Title   June 1999") and footers ("Author   Informational
# [Page 3]"); the pre-1990 free-for-all; and xml2rfc v3 output without pages. The rules below
# are the ones the real files needed; each has a synthetic unit test.
# ---------------------------------------------------------------------------------------------

_MONTHS = "jan|feb|mar|apr|may|jun|jul|aug|sep|oct|nov|dec"
_DATE_LINE = re.compile(rf"(?i)^\s*(\d{{1,2}}\s+)?({_MONTHS})[a-z]*\.?\s+(\d{{1,2}},?\s+)?\d{{4}}$")
_PAGE_HEADER = re.compile(
    r"(?i)^\s*(NWG/)?RFC\s*[-#:]?\s*\d+"  # "RFC 1234  ...", "NWG/RFC# 739 ...", "RFC-908 ..."
    r"|\bRFC[ -]?\d+$"  # "Assigned Numbers        RFC 960"
    r"|\S\s{5,}.*\b(19|20)\d\d$"  # "DARPA Internet Gateway        September 1982"
    r"|\s{3,}(p\.|page)\s*\d+$"  # "NETED SPEC        p. 4"
)
_PAGE_FOOTER = re.compile(
    r"(?i)\[\s*page\s+[0-9ivxlc]+\s*\]"  # "Author   Informational   [Page 3]"
    r"|^\s*page\s+[0-9ivxlc]+$"  # "Page 69"
    r"|^\s*-\s*[0-9ivxlc]+\s*-$"  # "-4-"
    r"|^\s*[0-9ivxlc]{1,4}$"  # a bare page number
)
# the same furniture anywhere, for pages whose form feed went missing
_STRICT_FOOTER = re.compile(r"^\s*(\S.*\s{3,})?\[Page \d+\]$")
_STRICT_HEADER = re.compile(r"^RFC\s+\d+\s{2,}.*\b(19|20)\d\d$")

_FRONT_HEADINGS = {
    "status of this memo",
    "status of this document",
    "copyright notice",
    "copyright",
    "abstract",
    "table of contents",
    "contents",
    "iesg note",
    "iana note",
    "ietf note",
    "rfc editor's note",
    "note",
    "notice",
}
_TOC_HEADINGS = {"table of contents", "contents"}
# heading prefixes: "Overview and Rationale" counts
_INTRO_HEADINGS = ("introduction", "overview", "background", "motivation", "preface", "summary")
_TAIL_HEADING = re.compile(
    r".*(copyright|intellectual|intellectural|\bipr\b).*|(legal )?notices?|acknowledge?ments?"
    r"|disclaimer"
)
# the boilerplate is 50-300 words; longer sections (e.g. RFC 2026 on IPR) are content
_TAIL_MAX_WORDS = 450
_TAIL_MARKERS = (
    "copyright (c) the internet society",
    "copyright (c) the ietf trust",
    "ietf takes no position regarding the validity",
    "funding for the rfc editor function",
    "this document and translations of it may be copied",
)
# "1.  Introduction", "1 INTRODUCTION", "1) Overview", "2.0 Required Features"
_NUMBERED = re.compile(
    r"^(?P<indent> {0,8})(?P<num>\d{1,2})(\.0)?[.)]?\s+(?P<title>[A-Za-z\"'].*)$"
)
_TOC_PAGE = re.compile(r"(\.{2,}|\s)\s*[0-9ivx]+$")
_TOC_ENTRY = re.compile(r"\.{3,}|\.\s\.\s\.|\s[0-9ivx]+$|^\s+(\d+(\.\d+)*\.?|[A-Z](\.\d+)*\.?)\s")
_HEADER_FIELD = re.compile(
    r"(?i)^\s*(network working group|request for comments|internet engineering task force"
    r"|internet architecture board|internet research task force|independent submission"
    r"|rfc\s*[-#:]?\s*\d+|nic\s*[:#]|categor(y|ies)\s*:|obsoletes\s*:|updates\s*:|references\s*:"
    r"|issn:|bcp:|std:|fyi:)"
)


def clean_rfc(raw: str, variant: str, title: str = "") -> tuple[str, str]:
    """Body text of one plain-text RFC, and the route the cleaning took (for counting).

    Drops page furniture (form feeds, running headers and footers), the front matter (header
    block, title, Status of this Memo, Copyright Notice, Abstract, table of contents, IESG
    notes) and the trailing copyright / IPR boilerplate. "full" starts at the first content
    section. "nointro" skips the Introduction: in numbered RFCs it starts at section 2 (at
    section 3 when section 2 is the Introduction, after e.g. "1. Conventions"); in unnumbered
    ones after a leading Introduction / Overview / Background / Summary section when there is
    one, else at the same place as "full" (route "nointro_unnumbered_kept").
    `title` (from the metadata) helps find the title lines of RFCs without any headings.
    """
    lines = strip_page_furniture(raw)
    start, later, route = _body_start(lines, title)
    if variant == "nointro":
        start, route = _skip_intro(lines, start, later)
    body = _drop_tail_boilerplate(lines[start:])
    return _squeeze_blank_lines(body), route


def strip_page_furniture(raw: str) -> list[str]:
    """Lines of `raw` without form feeds and running page headers / footers, right-stripped."""
    text = raw.replace("\r\n", "\n").replace("\r", "\n").replace("\x00", "").lstrip("\ufeff")
    pages = [[ln.rstrip().expandtabs() for ln in page.split("\n")] for page in text.split("\f")]
    repeated = _repeated_page_tops(pages[1:])
    out: list[str] = []
    for i, page in enumerate(pages):
        if i > 0:
            _drop_page_header(page, repeated)
        _drop_page_footer(page)
        out.extend(page)
    return [ln for ln in out if not (_STRICT_FOOTER.match(ln) or _STRICT_HEADER.match(ln))]


def _page_top_key(line: str) -> str:
    """First column, lower-cased, digits masked: "RFC 908     July 1984" -> "rfc #"."""
    key = re.sub(r"\d+", "#", re.split(r"\s{3,}", line.strip())[0].lower())
    # short keys ("o", "#.") are bullets and list numbers, not headers
    return key if len(key) >= 8 else ""


def _repeated_page_tops(pages: list[list[str]]) -> set[str]:
    """Keys of first lines shared by 3+ pages and a quarter of them: headers in no known form."""
    tops = Counter()
    for page in pages:
        i = _first_nonblank(page)
        if i is not None:
            tops[_page_top_key(page[i])] += 1
    return {k for k, n in tops.items() if k and n >= max(3, len(pages) / 4)}


def _first_nonblank(lines: list[str], start: int = 0, step: int = 1) -> int | None:
    i = start
    while 0 <= i < len(lines):
        if lines[i].strip():
            return i
        i += step
    return None


def _drop_page_header(page: list[str], repeated: set[str]) -> None:
    i = _first_nonblank(page)
    if i is None:
        return
    line = page[i]
    if not (_PAGE_HEADER.search(line) or _DATE_LINE.match(line) or _page_top_key(line) in repeated):
        return
    del page[i]
    # two-line headers ("September 1981" / right-aligned "Internet Protocol"), as in RFC 791
    nxt = page[i] if i < len(page) else ""
    if nxt.strip() and (_DATE_LINE.match(nxt) or (_indent(nxt) >= 30 and len(nxt.strip()) < 60)):
        del page[i]


def _drop_page_footer(page: list[str]) -> None:
    i = _first_nonblank(page, len(page) - 1, -1)
    if i is not None and _PAGE_FOOTER.search(page[i]):
        del page[i]


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _heading_text(line: str) -> str:
    """Lower-cased, without numbering or a final colon / dot: "2.  Abstract:" -> "abstract"."""
    text = re.sub(r"^\s*(\d+(\.\d+)*[.)]?|[A-Z][.)])\s+", "", line.strip())
    return " ".join(text.rstrip(":.").split()).lower()


def _toc_key(line: str) -> str:
    """Number and words of a TOC entry or heading: "1.  Intro ....... 3" -> "1 intro"."""
    text = re.sub(r"(\s*\.){2,}\s*[0-9ivx]*$|\s+[0-9ivx]+$", "", line.strip().lower())
    return " ".join(re.findall(r"[a-z0-9]+", text))


def _find_toc(lines: list[str]) -> tuple[int, int] | None:
    """(heading index, first index after the table of contents), if there is one up front."""
    limit = min(400, len(lines) // 2)
    head = next((i for i in range(limit) if _heading_text(lines[i]) in _TOC_HEADINGS), None)
    if head is None:
        return None
    listed: set[str] = set()
    i, last_entry = head + 1, head
    while i < len(lines):
        line = lines[i]
        if line.strip():
            key = _toc_key(line)
            # the body begins where a listed heading comes back without its page number
            if key and key in listed and not _TOC_PAGE.search(line):
                break
            entry_indent = _indent(lines[last_entry]) if last_entry > head else -1
            is_entry = _TOC_ENTRY.search(line) or (
                last_entry > head and _indent(line) > entry_indent and i - last_entry <= 2
            )
            if not is_entry and _heading_text(line) not in _TOC_NAMES:
                break
            if not is_entry and _indent(line) == 0 and _looks_like_real_section(lines, i):
                break
            listed.add(key)
            last_entry = i
        i += 1
    return head, last_entry + 1


# unnumbered TOC entries that recur as headings later, e.g. "Acknowledgements ........ 12"
_TOC_NAMES = {
    "acknowledgements",
    "acknowledgments",
    "references",
    "authors' addresses",
    "author's address",
    "index",
    "glossary",
    "contributors",
    "appendix",
    "preface",
}


def _looks_like_real_section(lines: list[str], i: int) -> bool:
    """A heading followed by a paragraph (not by another TOC-looking line)."""
    j = _first_nonblank(lines, i + 1)
    return j is not None and not _TOC_ENTRY.search(lines[j]) and len(lines[j].split()) > 6


def _numbered_headings(lines: list[str], start: int) -> list[tuple[int, int, int, str]]:
    """(index, number, indent, title) of top-level numbered section headings from `start`."""
    found = []
    for i in range(start, len(lines)):
        m = _NUMBERED.match(lines[i])
        # dotted leaders or a trailing page number: a table-of-contents entry; a sentence
        # break or a long title: an item of a numbered list
        title = m.group("title") if m else ""
        if not m or re.search(r"\.{3,}|\s\d+$", lines[i]) or len(title) > 70:
            continue
        # nor is a row of a figure or table ("2.    SYN-SENT    <SEQ=100><SYN> --->")
        if re.search(r"[a-z]\.\s+[A-Z]|\S\s{3,}\S|[<>=|]", title):
            continue
        # headings stand alone: blank line after, and before (unless at `start`)
        if i > 0 and lines[i - 1].strip() and i != start:
            continue
        if i + 1 < len(lines) and lines[i + 1].strip():
            continue
        found.append((i, int(m.group("num")), len(m.group("indent")), m.group("title")))
    return found


def _section_sequence(lines: list[str], start: int) -> list[int] | None:
    """Line indexes of headings 1, 2, 3, ... at one indentation, or None if there is no 1 and 2.

    Requiring the run to continue (1 then 2) keeps a numbered list in an unnumbered RFC from
    passing for sections. Later headings may sit up to 3 columns off section 1's indentation
    (RFC 2166 indents only "1. Introduction").
    """
    heads = _numbered_headings(lines, start)
    # section 1 comes early; a "1." deep into the text starts a list in an unnumbered RFC
    latest = start + max(120, (len(lines) - start) // 2)
    for k, (i, num, indent, _) in enumerate(heads):
        if num != 1 or i > latest:
            continue
        run, pos = [i], k
        while (pos := _next_heading(heads, pos, len(run) + 1, indent)) is not None:
            run.append(heads[pos][0])
        if len(run) >= 2:
            return run
    return None


def _next_heading(
    heads: list[tuple[int, int, int, str]], after: int, number: int, indent: int
) -> int | None:
    """Position in `heads` of the next heading `number`: at `indent`, else within 3 columns."""
    later = [k for k in range(after + 1, len(heads)) if heads[k][1] == number]
    exact = [k for k in later if heads[k][2] == indent]
    near = [k for k in later if abs(heads[k][2] - indent) <= 3]
    return (exact or near or [None])[0]


def _body_start(lines: list[str], title: str) -> tuple[int, list[int], str]:
    """(first body line, first lines of the later top-level sections when numbered, route)."""
    toc = _find_toc(lines)
    after_front = toc[1] if toc else 0
    run = _section_sequence(lines, after_front)
    if run:
        # a numbered "1. Abstract" or "1. Status of this Memo" is still front matter
        k = 0
        while k + 1 < len(run) and _heading_text(lines[run[k]]) in _FRONT_HEADINGS:
            k += 1
        return run[k], run[k + 1 :], "numbered"
    start = _after_front_sections(lines, after_front)
    if start is not None:
        return start, [], "unnumbered_after_front_sections"
    return _after_header_block(lines, after_front, title), [], "unnumbered_after_header_block"


def _section_end(lines: list[str], head: int) -> int:
    """First line after the section headed at `head`.

    That is the next paragraph (non-blank line after a blank one) indented no deeper than the
    heading; requiring the blank keeps unindented body paragraphs in their section.
    """
    indent = _indent(lines[head])
    seen_content = False
    for i in range(head + 1, len(lines)):
        if not lines[i].strip():
            continue
        if seen_content and _indent(lines[i]) <= indent and not lines[i - 1].strip():
            return i
        seen_content = True
    return len(lines)


def _after_front_sections(lines: list[str], start: int) -> int | None:
    """End of the last front-matter section (Status of this Memo, Abstract, ...) up front."""
    limit = min(len(lines), max(start, 0) + 250)
    end = None
    i = start
    while i < limit:
        if lines[i].strip() and _heading_text(lines[i]) in _FRONT_HEADINGS:
            end = _section_end(lines, i)
            i = end
            continue
        i += 1
    return end


def _words(text: str) -> str:
    return " ".join(re.findall(r"[a-z0-9]+", text.lower()))


def _after_header_block(lines: list[str], start: int, title: str) -> int:
    """First line after the header fields, title and other short centred lines up front."""
    title_words = _words(title)
    last_front = start - 1
    for i in range(start, min(len(lines), start + 80)):
        line = lines[i]
        if not line.strip():
            continue
        centred = _indent(line) >= 10 and len(line.strip()) < 60
        # the title, maybe over several lines; the query when there is no abstract
        in_title = len(_words(line)) >= 4 and _words(line) in title_words
        header = _HEADER_FIELD.match(line) or _DATE_LINE.match(line)
        if header or centred or in_title or "   " in line.strip():
            last_front = i
        else:
            break
    return last_front + 1


def _skip_intro(lines: list[str], start: int, later: list[int]) -> tuple[int, str]:
    """Where "nointro" starts, and the route taken.

    Numbered: the second content section, or the third when the second is the Introduction
    (after e.g. "1. Conventions"). Unnumbered: after a leading Introduction-like section.
    """
    if later:
        if len(later) > 1 and _heading_text(lines[later[0]]).startswith("introduction"):
            return later[1], "nointro_section3_after_intro"
        return later[0], "nointro_section2"
    head = _first_nonblank(lines, start)
    if head is not None and _heading_text(lines[head]).startswith(_INTRO_HEADINGS):
        return _section_end(lines, head), "nointro_unnumbered_intro_dropped"
    return start, "nointro_unnumbered_kept"


def _drop_tail_boilerplate(lines: list[str]) -> list[str]:
    """Without copyright / IPR / RFC-Editor-funding sections (recognised by their wording)."""
    keep = [True] * len(lines)
    for i, line in enumerate(lines):
        if not line.strip() or _indent(line) > 3 or len(line) > 60:
            continue
        if not _TAIL_HEADING.fullmatch(_heading_text(line)):
            continue
        end = _section_end(lines, i)
        words = " ".join(lines[i:end]).lower().split()
        section = " ".join(words)
        if len(words) <= _TAIL_MAX_WORDS and any(m in section for m in _TAIL_MARKERS):
            keep[i:end] = [False] * (end - i)
    return [ln for ln, k in zip(lines, keep, strict=True) if k]


def _squeeze_blank_lines(lines: list[str]) -> str:
    out: list[str] = []
    for line in lines:
        if line.strip() or (out and out[-1]):
            out.append(line if line.strip() else "")
    return "\n".join(out).strip("\n")


# ---------------------------------------------------------------------------------------------
# Shared by the man page and kernel doc builders
# ---------------------------------------------------------------------------------------------

# root of the installed system, where installed packages' files are looked for
SYSTEM_ROOT = Path("/")
# what a builder's read step returns: pairs, links between document ids, skips, stats metadata
ReadResult = tuple[list[Pair], list[tuple[str, str]], Tally, dict]


def _build(
    name: str, out_root: str | Path | None, corpus_version: int, read: Callable[[], ReadResult]
) -> Path:
    """Reuse `<out_root or cache_dir()>/<name>` when complete, else write it from `read()`.

    `read` returns (pairs, links, tally, meta); the seconds it took go into stats.json.
    """
    out_dir = Path(out_root or cache_dir()) / name
    if _is_complete(out_dir, corpus_version):
        log(f"{name}: reusing {out_dir}")
        return out_dir
    start = time.time()
    pairs, links, tally, meta = read()
    log(f"parsed {len(pairs)} pairs; skipped {sum(tally.skipped.values())} {dict(tally.skipped)}")
    meta = {
        "name": name,
        "corpus_version": corpus_version,
        **meta,
        "read_seconds": round(time.time() - start, 1),
    }
    stats = write_dataset(out_dir, pairs, links, tally, meta)
    _print_summary(name, stats, time.time() - start)
    return out_dir


# ---------------------------------------------------------------------------------------------
# Man page builder
# ---------------------------------------------------------------------------------------------

MAN_PACKAGES = ("manpages-dev", "perl-doc", "libssl-doc", "manpages-posix-dev")
MAN_PATTERNS = ("usr/share/man/man*/*",)
# bump when the man dataset changes (BUILD_VERSION is for changes to every dataset)
MAN_VERSION = 1
# columns of the rendered text: what `man` gives on a standard terminal
MAN_WIDTH = 80
# groff works in subprocesses, so threads suffice; more than the 2 cores would only queue
MAN_WORKERS = 2
# perltoc, the largest page, takes ~2 s; a page that hangs groff must not stall the build
GROFF_TIMEOUT_S = 120
# the same text on every page of a package: the POSIX prolog, the POSIX and OpenSSL copyright
MAN_BOILERPLATE_SECTIONS = ("PROLOG", "COPYRIGHT")
# man-db's first-line hint ('\" et) names the preprocessors a page needs
_PREPROCESSOR_HINT = re.compile(r"""['.]\\"[ \t]*([a-z]+)""")
_PREPROCESSOR_FLAGS = {"e": "-e", "p": "-p", "r": "-R", "t": "-t"}
_ROFF_COMMENT = re.compile(r"""(['.][ \t]*)?\\["#]""")
_SO_REQUEST = re.compile(r"\.[ \t]*so[ \t]")
_TITLE_MACRO = re.compile(r"(?m)^\.[ \t]*(TH|Dt)[ \t]")
# box-drawing characters of tbl rules, alone on a line
_BOX_RULE = re.compile(r"[\u2500-\u257f][\s\u2500-\u257f]*")
# groff's -Tutf8 glyphs for plain input characters, made ASCII again: "-" and "\-" (hyphen and
# minus), "\ " (no-break space), and the lines of tbl boxes
_GROFF_GLYPHS = str.maketrans(
    {c: "+" for c in range(0x2500, 0x2580)}
    | {0x2500: "-", 0x2502: "|", 0x2550: "=", 0x2551: "|", 0x2010: "-", 0x2212: "-", 0xA0: " "}
)
# "printf, fprintf - formatted output conversion"; POSIX pages use an em dash, some Perl "--"
_NAME_SEPARATOR = re.compile(r"\s(?:--?|\u2014)\s")


def _dpkg_files(package: str, patterns: Sequence[str]) -> list[Path] | None:
    """Installed files of `package` that match `patterns`, from dpkg's list, if all are there.

    None when the package is not installed, or when dpkg left its files out (slim images drop
    /usr/share/man with path-exclude), so that it has to be fetched. Symlinks (Debian's man
    page aliases) are left out, as when a .deb is unpacked.
    """
    info = SYSTEM_ROOT / "var/lib/dpkg/info"
    lists = sorted(info.glob(f"{package}.list")) + sorted(info.glob(f"{package}:*.list"))
    if not lists:
        return None
    names = [n.lstrip("/") for n in lists[0].read_text(errors="replace").splitlines()]
    paths = [SYSTEM_ROOT / n for n in names if any(fnmatch.fnmatch(n, p) for p in patterns)]
    files = [p for p in paths if not p.is_symlink() and not p.is_dir()]
    if not files or not all(p.is_file() for p in files):
        return None
    return sorted(files)


def _page_files(man_dir: Path) -> list[Path]:
    """The regular files in `man_dir`/man*/, sorted; symlinks (aliases) are left out."""
    return sorted(p for p in man_dir.glob("man*/*") if p.is_file() and not p.is_symlink())


def _man_source_files(pages_dir: Path | None) -> tuple[list[Path], dict]:
    """Man page files in a fixed order, and a description of the source.

    Order: an explicit `pages_dir` (shaped like /usr/share/man); else the installed packages
    when all of them are (only their files, from dpkg's lists: /usr/share/man holds many
    other packages' pages); else the cache, fetching what is missing.
    """
    if pages_dir is not None:
        files = _page_files(pages_dir)
        if not files:
            raise CorpusUnavailable(f"--pages_dir {pages_dir} holds no man*/ page files")
        return files, {"source": str(pages_dir)}
    installed = [_dpkg_files(p, MAN_PATTERNS) for p in MAN_PACKAGES]
    if all(installed):
        return [f for files in installed for f in files], {"source": "installed packages"}
    try:
        infos = fetch_debian_packages(MAN_PACKAGES, MAN_PATTERNS)
    except CorpusUnavailable as err:
        raise CorpusUnavailable(
            f"{err}\n\nThe man pages could not be fetched. Either install the packages "
            f"(`apt-get install {' '.join(MAN_PACKAGES)}`; manpages-posix-dev is in Debian's "
            "non-free component), or copy their man*/ directories into one tree shaped like "
            "/usr/share/man and pass --pages_dir DIR."
        ) from err
    files = [f for p in MAN_PACKAGES for f in _page_files(infos[p]["root"] / "usr/share/man")]
    return files, package_meta(infos)


def is_so_stub(source: str) -> bool:
    """Whether a roff page is only a `.so other/page` alias (comments and blanks aside)."""
    lines = [ln for ln in source.splitlines() if ln.strip() and not _ROFF_COMMENT.match(ln)]
    return len(lines) == 1 and bool(_SO_REQUEST.match(lines[0]))


def render_man(source: str) -> str:
    """Plain text of one roff page as groff formats it for a MAN_WIDTH-column terminal.

    Non-ASCII input goes in as \\[uXXXX] escapes (as preconv would write them), so groff never
    guesses an encoding. The output has no colours, overstrike, hyphenation or justification
    spaces, no tbl rule lines, and groff's hyphen, minus and no-break space glyphs are ASCII
    again. Raises subprocess.CalledProcessError or TimeoutExpired when groff fails.
    """
    hint = _PREPROCESSOR_HINT.match(source)
    letters = hint.group(1) if hint else ""
    flags = [_PREPROCESSOR_FLAGS[c] for c in letters if c in _PREPROCESSOR_FLAGS]
    cmd = ["groff", "-mandoc", "-Tutf8", "-P-cbou", f"-rLL={MAN_WIDTH}n", "-rHY=0", *flags]
    escaped = re.sub(r"[^\x00-\x7f]", lambda m: f"\\[u{ord(m.group()):04X}]", source)
    # left-adjusted: the man macros never change the adjustment a page starts with
    proc = subprocess.run(
        cmd,
        input=(".ad l\n" + escaped).encode("ascii"),
        capture_output=True,
        timeout=GROFF_TIMEOUT_S,
        check=True,
    )
    text = proc.stdout.decode("utf-8", errors="replace")
    # grotty -c -b -o -u writes neither; a site configuration might still
    text = re.sub(r"\x1b\[[0-9;]*[A-Za-z]|.\x08", "", text)
    lines = [ln.rstrip() for ln in text.split("\n") if not _BOX_RULE.fullmatch(ln.strip())]
    return "\n".join(lines).translate(_GROFF_GLYPHS)


def split_man_page(rendered: str, has_header: bool) -> tuple[str | None, str, list[str]]:
    """(NAME section text, the rest of the page, headings of the dropped sections).

    Headings are the lines at column 0 (all text is indented); with a header (.TH) the first
    and last lines are the running header and footer, and go. The whole NAME section goes,
    and its line (`_name_line`) is returned; None when the page has no NAME section.
    MAN_BOILERPLATE_SECTIONS are dropped.
    """
    lines = rendered.split("\n")
    nonblank = [i for i, ln in enumerate(lines) if ln.strip()]
    if has_header and nonblank:
        lines = lines[nonblank[0] + 1 : nonblank[-1]]
    name, body, dropped = None, [], []
    for heading, block in _man_sections(lines):
        if heading == "NAME" and name is None:
            name = _name_line(block[1:])
        elif heading in MAN_BOILERPLATE_SECTIONS:
            dropped.append(heading)
        else:
            body.extend(block)
    return name, _squeeze_blank_lines(body), dropped


def _name_line(lines: list[str]) -> str:
    """The first paragraph of a NAME section that has a separator, else its first paragraph.

    A few pod pages break the list of names with a paragraph (OSSL_CMP_log_open.3ssl), and a
    few go on after the description with notes (perlos400.1).
    """
    paragraphs = [" ".join(p.split()) for p in _squeeze_blank_lines(lines).split("\n\n")]
    return next((p for p in paragraphs if _NAME_SEPARATOR.search(p)), paragraphs[0])


def _man_sections(lines: list[str]) -> list[tuple[str, list[str]]]:
    """(heading, lines from the heading on) per section; text before any heading has ""."""
    sections: list[tuple[str, list[str]]] = [("", [])]
    for line in lines:
        if line.strip() and not line[0].isspace():
            sections.append((line.strip(), []))
        sections[-1][1].append(line)
    return sections


def man_description(name: str) -> str:
    """The description in a NAME line: "printf, fprintf - formatted output" -> "formatted output"
    ("" when there is no separator)."""
    parts = _NAME_SEPARATOR.split(name, maxsplit=1)
    return parts[1].strip() if len(parts) == 2 else ""


def _rendered(path: Path, tally: Tally) -> tuple[str, str] | None:
    """(roff source, rendered text) of one page file; None, with a counted skip, if unusable."""
    try:
        source = decode_text(read_maybe_gzipped(path), tally)
    except READ_ERRORS as err:
        tally.skip("unreadable_file", f"{path}: {err}")
        return None
    if is_so_stub(source):
        tally.skip("so_alias_stub", str(path))
        return None
    try:
        return source, render_man(source)
    except subprocess.CalledProcessError as err:
        tally.skip("groff_failed", f"{path}: {err.stderr.decode(errors='replace')[-300:]}")
    except subprocess.TimeoutExpired:
        tally.skip("groff_timeout", str(path))
    return None


def _man_pair(doc_id: str, path: Path) -> tuple[Pair | None, Tally]:
    """One page's pair (or None) and its own tally: it runs in a worker thread."""
    tally = Tally()
    rendered = _rendered(path, tally)
    if rendered is None:
        return None, tally
    source, text = rendered
    name, body, dropped = split_man_page(text, has_header=bool(_TITLE_MACRO.search(source)))
    for heading in dropped:
        tally.note(f"dropped_section_{heading}")
    if name is None:
        tally.skip("no_name_section", str(path))
        return None, tally
    query = man_description(name)
    if not query:
        tally.skip("no_name_description", f"{path}: {name[:100]}")
        return None, tally
    if not body.strip():
        tally.skip("empty_body", str(path))
        return None, tally
    return Pair(id=doc_id, query=query, text=body), tally


def read_man_pairs(files: Sequence[Path], workers: int = MAN_WORKERS) -> tuple[list[Pair], Tally]:
    """(NAME description, rendered page without NAME) pairs from roff man page files.

    A page's id is its file name without .gz ("printf.3", "printf.3posix"); an id seen twice
    keeps its first file. groff renders the pages in `workers` threads (~0.05 s a page in a
    subprocess; perltoc ~2 s); the pairs keep the order of `files`. Never raises on a bad
    page: each problem is a counted skip in the returned Tally.
    """
    tally, unique = Tally(), {}
    for path in files:
        doc_id = path.name.removesuffix(".gz")
        if doc_id in unique:
            tally.skip("duplicate_id", str(path))
        else:
            unique[doc_id] = path
    pairs = []
    with ThreadPoolExecutor(max_workers=workers) as pool:
        results = pool.map(_man_pair, unique, unique.values())
        bar = tqdm(
            results, total=len(unique), desc="man pages", unit="page", disable=None, leave=False
        )
        for pair, page_tally in bar:
            tally.merge(page_tally)
            if pair is not None:
                pairs.append(pair)
    return pairs, tally


def prepare_manpages(
    out_root: str | Path | None = None, pages_dir: str | Path | None = None
) -> Path:
    """Build (or reuse) the man page dataset `<out_root or cache_dir()>/man`; returns its dir.

    Query: the NAME line's description ("formatted output conversion"); document: the page
    as groff renders it at MAN_WIDTH columns, without NAME and the boilerplate sections.
    Pages with one description (the POSIX and the Linux page of a function) are positives of
    one query, in one split. `pages_dir`: a tree shaped like /usr/share/man to read instead
    of the packages. Needs groff (groff-base); the ~3,250 pages take ~1.5 min on 2 cores. An
    existing complete dataset is reused untouched, whatever `pages_dir` says.
    """

    def read() -> ReadResult:
        if shutil.which("groff") is None:
            raise CorpusUnavailable("groff is not installed (Debian package groff-base)")
        files, source = _man_source_files(Path(pages_dir) if pages_dir else None)
        log(f"man: rendering {len(files)} page files from {source['source']}")
        pairs, tally = read_man_pairs(files)
        meta = {"corpus": "man", "packages": list(MAN_PACKAGES), "width": MAN_WIDTH, **source}
        return pairs, [], tally, meta

    return _build("man", out_root, MAN_VERSION, read)


# ---------------------------------------------------------------------------------------------
# Kernel documentation builder
# ---------------------------------------------------------------------------------------------

KERNEL_PACKAGE = "linux-doc-6.1"
KERNEL_DOCS = "usr/share/doc/linux-doc-6.1/Documentation"
KERNEL_PATTERNS = (f"{KERNEL_DOCS}/*.rst.gz",)
# bump when the kernel dataset changes (BUILD_VERSION is for changes to every dataset)
KERNEL_VERSION = 1
KERNEL_MIN_WORDS = 300
# a section title's over- / underline: one punctuation character repeated, from column 0
# (the first titles use = * - # ~ ^ +)
_ADORNMENT = re.compile(r"([=\-~*^+#\"'`:._])\1{2,}[ \t]*")
# ".. anything" and "..": comments, link targets, footnotes, substitutions, directives
_EXPLICIT_MARKUP = re.compile(r"(?P<indent>[ \t]*)\.\.(?:[ \t]+(?P<rest>.*))?")
_DIRECTIVE = re.compile(r"(?P<name>[\w:+-]+)::")
# directives whose block holds no text of the page: references to other files or to source
# comments (pulled in when the docs are built), generated contents, formatting hints
KERNEL_DROPPED_DIRECTIVES = frozenset(
    {
        "toctree",
        "kernel-doc",
        "kernel-include",
        "kernel-abi",
        "kernel-feat",
        "include",
        "literalinclude",
        "contents",
        "sectnum",
        "raw",
        "tabularcolumns",
        "cssclass",
        "highlight",
        "c:namespace",
    }
)


def _markup_droppable(rest: str) -> bool:
    """Whether an explicit markup block (".. " + `rest`) goes: comments, targets, some directives.

    Footnotes ("[1]") and substitution definitions ("|name|") are page text.
    """
    directive = _DIRECTIVE.match(rest)
    if directive:
        return directive.group("name") in KERNEL_DROPPED_DIRECTIVES
    return not rest.startswith(("[", "|"))


def _drop_markup_blocks(lines: list[str]) -> list[str]:
    """`lines` without comments (SPDX lines too), link targets and dropped directive blocks.

    A block is its marker line and every following line that is blank or indented deeper.
    """
    out, i = [], 0
    while i < len(lines):
        m = _EXPLICIT_MARKUP.fullmatch(lines[i])
        if m is None or not _markup_droppable(m.group("rest") or ""):
            out.append(lines[i])
            i += 1
            continue
        indent = len(m.group("indent"))
        i += 1
        while i < len(lines) and (not lines[i].strip() or _indent(lines[i]) > indent):
            i += 1
    return out


def _title_span(lines: list[str], i: int) -> tuple[int, int] | None:
    """(first, last) line of the section title whose text is line `i`, if it is one."""
    text = lines[i]
    if not text.strip() or _ADORNMENT.fullmatch(text):
        return None
    if i + 1 >= len(lines) or not _ADORNMENT.fullmatch(lines[i + 1]):
        return None
    under = lines[i + 1][0]
    if i > 0 and _ADORNMENT.fullmatch(lines[i - 1]) and lines[i - 1][0] == under:
        return i - 1, i + 1
    # an underlined-only title starts at column 0; only an overlined one may be inset
    return (i, i + 1) if not text[0].isspace() else None


def _is_adornment(lines: list[str], i: int) -> bool:
    """Whether line `i` is the over- or underline of some section title."""
    spans = (_title_span(lines, j) for j in (i - 1, i + 1) if 0 <= j < len(lines))
    return any(span and span[0] <= i <= span[1] for span in spans)


def clean_kernel_rst(text: str) -> tuple[str | None, str]:
    """(title, body) of one reST page; the title is None when the page has none.

    The title is the text of the first section title: a line underlined, or over- and
    underlined, by one punctuation character repeated. The body is the rest of the source
    without comments (the SPDX line too), link targets (".. _label:"), the blocks of
    KERNEL_DROPPED_DIRECTIVES (toctree, kernel-doc, ...) and the title adornment lines; prose,
    code and all other markup stay as they are.
    """
    lines = [ln.rstrip() for ln in text.replace("\r\n", "\n").expandtabs(8).split("\n")]
    lines = _drop_markup_blocks(lines)
    span = next((s for i in range(len(lines)) if (s := _title_span(lines, i))), None)
    if span is None:
        return None, _squeeze_blank_lines(lines)
    first, last = span
    title = " ".join(lines[last - 1].split())
    rest = lines[:first] + lines[last + 1 :]
    body = [ln for i, ln in enumerate(rest) if not _is_adornment(rest, i)]
    return title, _squeeze_blank_lines(body)


def _kernel_pair(path: Path, doc_id: str, tally: Tally) -> Pair | None:
    try:
        text = decode_text(read_maybe_gzipped(path), tally)
    except READ_ERRORS as err:
        tally.skip("unreadable_file", f"{path}: {err}")
        return None
    title, body = clean_kernel_rst(text)
    if not title:
        tally.skip("no_title", str(path))
        return None
    if len(body.split()) < KERNEL_MIN_WORDS:
        tally.skip(f"under_{KERNEL_MIN_WORDS}_words", str(path))
        return None
    return Pair(id=doc_id, query=title, text=body)


def read_kernel_pairs(docs_dir: Path) -> tuple[list[Pair], Tally]:
    """(title, cleaned page) pairs from the .rst.gz files under `docs_dir` (a Documentation/).

    A page's id is its path without .rst.gz ("core-api/kref"). Pages under translations/,
    pages under KERNEL_MIN_WORDS words, and unreadable or titleless ones are counted skips;
    never raises on a bad file.
    """
    pairs, tally = [], Tally()
    paths = sorted(
        (p for p in docs_dir.rglob("*.rst.gz") if p.is_file() and not p.is_symlink()),
        key=lambda p: natural_key(p.relative_to(docs_dir).as_posix()),
    )
    for path in tqdm(paths, desc="kernel docs", unit="page", disable=None, leave=False):
        rel = path.relative_to(docs_dir).as_posix()
        if rel.startswith("translations/"):
            tally.skip("translation", rel)
            continue
        pair = _kernel_pair(path, rel.removesuffix(".rst.gz"), tally)
        if pair is not None:
            pairs.append(pair)
    return pairs, tally


def _kernel_docs_dir(docs_dir: Path | None) -> tuple[Path, dict]:
    """The Documentation/ directory to read, and a description of the source.

    Order: an explicit `docs_dir`; else the installed one when it holds .rst.gz files (slim
    images drop /usr/share/doc); else the cache, fetching the package when missing.
    """
    if docs_dir is not None:
        if not any(docs_dir.rglob("*.rst.gz")):
            raise CorpusUnavailable(
                f"--docs_dir {docs_dir} holds no .rst.gz files (expected a copy of /{KERNEL_DOCS})"
            )
        return docs_dir, {"source": str(docs_dir)}
    installed = SYSTEM_ROOT / KERNEL_DOCS
    if any(installed.rglob("*.rst.gz")):
        return installed, {"source": str(installed)}
    try:
        infos = fetch_debian_packages([KERNEL_PACKAGE], KERNEL_PATTERNS)
    except CorpusUnavailable as err:
        raise CorpusUnavailable(
            f"{err}\n\nThe kernel docs could not be fetched. Either install the package "
            f"(`apt-get install {KERNEL_PACKAGE}`), or copy its /{KERNEL_DOCS} somewhere and "
            "pass --docs_dir DIR."
        ) from err
    return infos[KERNEL_PACKAGE]["root"] / KERNEL_DOCS, package_meta(infos)


def prepare_kernel_docs(
    out_root: str | Path | None = None, docs_dir: str | Path | None = None
) -> Path:
    """Build (or reuse) the kernel docs dataset `<out_root or cache_dir()>/kernel`; returns it.

    Query: a page's title; document: its reST source without the title and with comments,
    link targets and file-reference directives dropped (`clean_kernel_rst`), pages of
    KERNEL_MIN_WORDS+ words outside translations/. Pages sharing a title are positives of one
    query, in one split. `docs_dir`: a copy of /usr/share/doc/linux-doc-6.1/Documentation to
    read instead of the package. An existing complete dataset is reused untouched.
    """

    def read() -> ReadResult:
        root, source = _kernel_docs_dir(Path(docs_dir) if docs_dir else None)
        log(f"kernel: reading {root}")
        pairs, tally = read_kernel_pairs(root)
        return pairs, [], tally, {"corpus": "kernel", "packages": [KERNEL_PACKAGE], **source}

    return _build("kernel", out_root, KERNEL_VERSION, read)


# ---------------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------------


CORPORA = ("rfc", "man", "kernel")


@dataclass
class PrepareArgs:
    """Arguments of `python corpora.py`; a field's metadata "corpus" names the one it is for."""

    corpus: str = field(
        default="rfc",
        metadata={"help": f"which dataset to build: one of {CORPORA}"},
    )
    variant: str = field(
        default="nointro",
        metadata={
            "help": "nointro: body from the section after the Introduction; full: all",
            "corpus": "rfc",
        },
    )
    package_set: str = field(
        default="small",
        metadata={
            "help": "small, all, or one doc-rfc package suffix such as experimental",
            "corpus": "rfc",
        },
    )
    rfc_dir: str | None = field(
        default=None,
        metadata={"help": "a copy of /usr/share/doc/RFC to read instead", "corpus": "rfc"},
    )
    pages_dir: str | None = field(
        default=None,
        metadata={"help": "a tree shaped like /usr/share/man to read instead", "corpus": "man"},
    )
    docs_dir: str | None = field(
        default=None,
        metadata={"help": f"a copy of /{KERNEL_DOCS} to read instead", "corpus": "kernel"},
    )
    out_root: str | None = field(
        default=None,
        metadata={"help": "where datasets go (default: $LONGCL_CACHE or ~/.cache/longcl)"},
    )

    def __post_init__(self) -> None:
        if self.corpus not in CORPORA:
            raise ValueError(f"--corpus must be one of {CORPORA}, got {self.corpus!r}")
        if self.variant not in RFC_VARIANTS:
            raise ValueError(f"--variant must be one of {RFC_VARIANTS}, got {self.variant!r}")
        rfc_packages(self.package_set)
        for f in dataclasses.fields(self):
            owner = f.metadata.get("corpus")
            if owner not in (None, self.corpus) and getattr(self, f.name) != f.default:
                raise ValueError(f"--{f.name} is for --corpus {owner}, not {self.corpus}")


def prepare(args: PrepareArgs) -> Path:
    """Build (or reuse) the dataset `args` name; returns its directory."""
    if args.corpus == "man":
        return prepare_manpages(args.out_root, args.pages_dir)
    if args.corpus == "kernel":
        return prepare_kernel_docs(args.out_root, args.docs_dir)
    return prepare_rfc(args.variant, args.package_set, args.rfc_dir, args.out_root)


def main(argv: Sequence[str] | None = None) -> Path:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    for f in dataclasses.fields(PrepareArgs):
        parser.add_argument(f"--{f.name}", default=f.default, help=f.metadata["help"])
    try:
        args = PrepareArgs(**vars(parser.parse_args(argv)))
    except ValueError as err:
        parser.error(str(err))
    try:
        out = prepare(args)
    except CorpusUnavailable as err:
        sys.exit(f"error: {err}")
    print(out)
    return out


if __name__ == "__main__":
    main()

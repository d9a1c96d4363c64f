"""eval.sh's checks that run before any data or model work."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def run_eval_sh(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["bash", str(REPO / "eval.sh"), *args], capture_output=True, text=True, timeout=60
    )


def test_unknown_option_and_missing_value_are_errors():
    bad = run_eval_sh("--lenght", "512")
    assert bad.returncode == 2 and "unknown option --lenght" in bad.stderr
    missing = run_eval_sh("--length")
    assert missing.returncode != 0 and "--length needs a value" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--length", "abc"], "--length must be a positive integer"),
        (["--max_docs", "-3"], "take an integer >= 0"),
        (["--rfc", "most"], "--rfc is all or small"),
        (["--datasets", " "], "names none of"),
        (["--datasets", "rfc rfc"], "repeats a name"),
        (["--datasets", "rfc pydoc"], "unknown dataset 'pydoc'"),
    ],
)
def test_bad_values_are_refused_before_anything_is_written(args, message, tmp_path):
    refused = run_eval_sh(*args, "--out", str(tmp_path / "results"))
    assert refused.returncode == 2 and message in refused.stderr
    assert not (tmp_path / "results").exists()


def test_a_results_dir_refuses_other_flags(tmp_path):
    out = tmp_path / "results"
    out.mkdir()
    (out / "settings.txt").write_text("length=1024 rfc=small max_queries=0 max_docs=0\n")
    refused = run_eval_sh("--length", "2048", "--rfc", "small", "--out", str(out))
    assert refused.returncode == 2
    assert "holds results made with: length=1024" in refused.stderr
    assert "not with: length=2048 rfc=small" in refused.stderr
    assert sorted(p.name for p in out.iterdir()) == ["settings.txt"]  # nothing else touched

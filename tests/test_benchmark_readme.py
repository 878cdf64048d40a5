"""benchmarks/README.md and the README's results block are generated from the result files:
this fails when a number in them differs from what its results.json says."""

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_benchmark_tables_match_their_result_files():
    r = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "make_readme.py"), "--check"], capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr


def test_the_readme_is_a_users_document():
    text = (ROOT / "README.md").read_text()
    assert len(text) < 12_000
    low = text.lower()
    assert "issue" not in low and "commit" not in low  # no words about how the work was organised
    for needle in (
        "make demo",
        "make test",
        "--format orders",
        "dualrec serve",
        "SECURITY.md",
        "benchmarks/README.md",
        "from dualrec.retrieval import Recommender",
    ):
        assert needle in text, needle

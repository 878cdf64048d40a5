"""Shared fixtures for the ingest tests."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FIXTURES = REPO / "tests" / "fixtures" / "ingest"
REAL_DATA = (REPO / ".." / "shared" / "data").resolve()


@pytest.fixture
def fixtures() -> Path:
    return FIXTURES


@pytest.fixture
def real_data() -> Path:
    """The real datasets (../shared/data); skips with a reason when absent (a fresh clone)."""
    if not (REAL_DATA / "README.md").is_file():
        pytest.skip(f"real data not found at {REAL_DATA} (../shared/data relative to the repo root)")
    return REAL_DATA


def edge_set(graph) -> dict:
    """{(src_id, dst_id): weight} of the co-purchase edges."""
    ids = graph.ids
    return {
        (ids[s], ids[d]): w for s, d, w in zip(graph.cp_src.tolist(), graph.cp_dst.tolist(), graph.cp_weight.tolist())
    }


def sim_set(graph) -> dict:
    """{frozenset({a_id, b_id}): weight} of the similarity pairs."""
    ids = graph.ids
    return {
        frozenset((ids[a], ids[b])): w
        for a, b, w in zip(graph.sim_a.tolist(), graph.sim_b.tolist(), graph.sim_weight.tolist())
    }


@pytest.fixture
def edges():
    return edge_set


@pytest.fixture
def sims():
    return sim_set

"""Suite-wide hygiene: a test that sets process-wide thread counts (a server built with
``faiss_threads=1``, ``dualrec --threads 1``) must not leave every later test on one core."""

from __future__ import annotations

import os
import sys

import pytest
import torch

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS")
_START = {"torch": torch.get_num_threads(), **{k: os.environ.get(k) for k in _THREAD_VARS}}


@pytest.fixture(autouse=True)
def _restore_thread_counts():
    yield
    if torch.get_num_threads() != _START["torch"]:
        torch.set_num_threads(_START["torch"])
    for k in _THREAD_VARS:
        if _START[k] is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = _START[k]
    if "faiss" in sys.modules:
        sys.modules["faiss"].omp_set_num_threads(int(_START["OMP_NUM_THREADS"] or os.cpu_count() or 1))

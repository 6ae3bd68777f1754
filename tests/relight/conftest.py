"""Relight tests run their many small tensor ops on one thread (restored after each module): on the
shared 2-core test machine (pytest -n 2) one thread is several times faster than two."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)

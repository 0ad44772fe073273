"""Shared fixtures: every test runs offline on the CPU with tiny in-process models."""

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import pytest  # noqa: E402
import torch  # noqa: E402

from msgrpo.policy import LanguagePolicy  # noqa: E402

torch.set_num_threads(1)  # two OpenMP threads stall badly on a loaded 2-core machine


@pytest.fixture(scope="session")
def tiny_policy_factory():
    """Build tiny policies (weights deterministic from the seed)."""

    def make(**kwargs) -> LanguagePolicy:
        kwargs.setdefault("max_new_tokens", 4)
        return LanguagePolicy(**kwargs)

    return make


@pytest.fixture
def tiny_policy(tiny_policy_factory) -> LanguagePolicy:
    return tiny_policy_factory()


@pytest.fixture(autouse=True)
def _no_leaked_run_seed(monkeypatch):
    """``seed_everything`` (run by every CLI test) leaves ``PL_GLOBAL_SEED`` in the environment, and seeds left
    at None follow it: start every test from a clean one."""
    monkeypatch.delenv("PL_GLOBAL_SEED", raising=False)

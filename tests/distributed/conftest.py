"""Fixtures for the distributed tests (helpers in ``dist_helpers.py``)."""

from __future__ import annotations

from pathlib import Path

import pytest
from dist_helpers import SGD, run_worker


def pytest_collection_modifyitems(config, items) -> None:
    """Every test here runs several processes: all of them are ``slow`` (left out of the fast lane)."""
    here = Path(__file__).parent
    for item in items:
        if here in Path(item.fspath).parents:
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="package")
def ddp_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """A 2-process ``ddp`` fit on the CPU (gloo), shared by the tests that compare against it."""
    root = tmp_path_factory.mktemp("ddp")
    return root, run_worker(root, "--trainer.strategy=ddp", "--trainer.devices=2")


@pytest.fixture(scope="package")
def ddp_unshared_run(tmp_path_factory) -> tuple[Path, list[dict]]:
    """The same ``ddp`` fit with ``share_prefill`` off (the maths a sharded (FSDP) run does, whose ranks
    must run the same forward passes and so never add a shared-prefix pass) and plain SGD (see
    ``dist_helpers.SGD``)."""
    root = tmp_path_factory.mktemp("ddp_unshared")
    args = ["--trainer.strategy=ddp", "--trainer.devices=2", "--model.policy.init_args.share_prefill=false", *SGD]
    return root, run_worker(root, *args)

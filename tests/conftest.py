"""Shared fixtures: real raftd clusters on 127.0.0.x, stopped at the end of each test."""
import pytest

from tests.e2e.harness import LocalCluster


@pytest.fixture
def cluster_factory(tmp_path):
    made = []

    def make(n=3, **tuning):
        c = LocalCluster(tmp_path / f"c{len(made)}", n, **tuning)
        made.append(c)
        return c

    yield make
    for c in made:
        c.stop()

import pytest

from .harness import LocalCluster


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

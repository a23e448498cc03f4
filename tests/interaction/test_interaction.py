"""One test per script in testdata/: see datadriven.py for the format and env.py for the
commands.  ``REWRITE=1 pytest tests/interaction`` regenerates the expected outputs."""
from __future__ import annotations

import pathlib

import pytest

from .datadriven import run_file
from .env import InteractionEnv

TESTDATA = pathlib.Path(__file__).parent / "testdata"
FILES = sorted(TESTDATA.glob("*.txt"))


@pytest.mark.parametrize("path", FILES, ids=[p.stem for p in FILES])
def test_interaction(path: pathlib.Path) -> None:
    run_file(str(path), InteractionEnv().handle)


def test_every_script_is_collected() -> None:
    names = {p.name for p in FILES}
    for required in ("figure7.txt", "figure8_d.txt", "figure8_e.txt", "election.txt",
                     "prevote_partitioned.txt", "check_quorum.txt", "read_index.txt",
                     "joint_consensus.txt", "leadership_transfer.txt"):
        assert required in names

"""python -m raftd.sim --seeds N [--nodes K] [--start S] [--jobs J] [--mutant NAME]
[--list-mutants] [--trace]        or: python -m raftd.sim --model [the model's flags]

The simulator of raftd itself (issue 15): the daemon's own runtime, WAL, snapshot store, KV
state machine and client library under simulated network, disk, crash, pause and membership
faults (raftd/simrt; ``python -m raftd.simrt`` is the same command).  ``--model`` runs the
earlier simulator of the sans-I/O core alone instead (``python -m raftd.sim.runmodel``, what
``raftctl sim`` shows step by step), with its own flags (--no-membership, --no-pipeline).

The storage layer's mutants (issue 21) are listed too; ``--mutant`` with one of them runs the
crash-state explorer (``python -m raftd.storage.explore``), which enumerates power-loss states
where the seeds only sample them.
"""
from __future__ import annotations

import sys

from raftd.simrt.__main__ import hash_seed_fixed
from raftd.simrt.__main__ import main as runtime_main

from raftd.storage import explore

from . import runmodel as model


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if "--model" in argv:
        argv.remove("--model")
        return model.main(argv)
    if "--list-mutants" in argv:
        code = runtime_main(argv, prog="python -m raftd.sim")
        print("\n".join(sorted(explore.MUTANTS)))
        return code
    pairs = zip(argv, argv[1:], strict=False)
    asked = {b for a, b in pairs if a == "--mutant"} | {a[9:] for a in argv
                                                        if a.startswith("--mutant=")}
    storage = next((m for m in explore.MUTANTS if m in asked), None)
    if storage is not None:
        return explore.main(["--mutant", storage])
    return runtime_main(argv, prog="python -m raftd.sim")


if __name__ == "__main__":
    hash_seed_fixed("raftd.sim")
    sys.exit(main())

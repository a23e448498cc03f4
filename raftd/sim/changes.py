"""Random membership changes for the simulator (Raft §6): add or promote learners, remove or
demote voters (the leader itself included), replace several voters at once.  Split from
cluster.py (issue 17 §2); the draws from ``rng`` are the same as before the split, so a seed
replays the same run."""
from __future__ import annotations

import random

from raftd.core import Configuration

from .model import SimParams


def pick_change(rng: random.Random, p: SimParams, ids: list[str], nid: str,
                cur: Configuration) -> tuple[str, Configuration] | None:
    """A random membership change relative to ``cur``, ``nid``'s configuration: what it does,
    and the configuration to move to; None if there is nothing sensible to change.  ``ids``
    is the pool of servers."""
    voters, learners = sorted(cur.voters), sorted(cur.learners)
    if not voters:
        return None  # a server that never joined: it has no idea what to change
    outsiders = [i for i in ids if i not in cur.members]
    small = len(voters) < p.min_voters
    big = len(voters) > p.nodes  # bigger than the bootstrap configuration: shrink more
    may_shrink = len(voters) > p.min_voters or (len(voters) > 1 and rng.random() < 0.1)
    options: list[str] = []
    if outsiders:
        options += ["add_learner"] * 3 + ["add_voter"] * (3 if small else 1)
    if learners:
        options += ["promote"] * (4 if small else 1 if big else 3) + ["remove_learner"]
    if may_shrink:
        options += ["remove_voter", "remove_self", "demote"] * (3 if big else 1)
    if outsiders or learners:
        options += ["replace"] * 3
    if not options:
        return None
    kind = rng.choice(options)
    v, lr = list(voters), list(learners)
    if kind == "add_learner":
        x = rng.choice(outsiders)
        lr.append(x)
        what = f"add learner {x}"
    elif kind == "add_voter":
        x = rng.choice(outsiders)
        v.append(x)
        what = f"add voter {x}"
    elif kind == "promote":
        x = rng.choice(learners)
        lr.remove(x)
        v.append(x)
        what = f"promote learner {x}"
    elif kind == "remove_learner":
        x = rng.choice(learners)
        lr.remove(x)
        what = f"remove learner {x}"
    elif kind in ("remove_voter", "demote", "remove_self"):
        x = nid if kind == "remove_self" and nid in v else rng.choice(voters)
        v.remove(x)
        if kind == "demote":
            lr.append(x)
            what = f"demote voter {x} to learner"
        else:
            what = f"remove voter {x}" + (" (the leader itself)" if x == nid else "")
    else:  # replace several voters at once
        candidates = sorted(learners + outsiders)
        k = rng.randint(1, min(len(voters), len(candidates), 3))
        out = rng.sample(voters, k)
        if nid in voters and nid not in out and rng.random() < 0.3:
            out[0] = nid  # often enough, the leader replaces itself
        new = rng.sample(candidates, k)
        v = [i for i in voters if i not in out] + new
        lr = [i for i in learners if i not in new]
        if rng.random() < 0.25:
            lr += out  # keep the replaced voters around as learners
        what = f"replace {','.join(sorted(out))} by {','.join(sorted(new))}"
    return what, Configuration.make(sorted(v), learners=sorted(lr))

"""Scenarios after the paper's figures and sections: Figure 7, Figure 8, §6 and §7."""
from __future__ import annotations

import dataclasses

from raftd.core import Entry, HardState, Role

from .script import BASIC, Script
from .world import Disk

# Figure 7: the leader's log (top row) and followers (a)-(f), as the term of each entry.
FIGURE7 = {
    "n1": ("leader", [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]),
    "n2": ("(a)", [1, 1, 1, 4, 4, 5, 5, 6, 6]),
    "n3": ("(b)", [1, 1, 1, 4]),
    "n4": ("(c)", [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6]),
    "n5": ("(d)", [1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7]),
    "n6": ("(e)", [1, 1, 1, 4, 4, 4, 4]),
    "n7": ("(f)", [1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3]),
}


def _disk(terms: list[int], term: int) -> Disk:
    entries = [Entry(t, i + 1, 0, f"t{t}i{i + 1}".encode()) for i, t in enumerate(terms)]
    return Disk(HardState(term, None), entries)


def figure7(s: Script) -> None:
    disks = {n: _disk(terms, 7 if n == "n1" else max(terms)) for n, (_, terms) in FIGURE7.items()}
    w = s.world(7, config=BASIC, disks=disks)
    s.note("Figure 7: seven servers whose logs diverged over terms 1-7; "
           + ", ".join(f"{n} is {label}" for n, (label, _) in FIGURE7.items()))
    s.note("n1 times out and runs for term 8; (c) and (d) hold more up-to-date logs and refuse, "
           "the other four vote for it (§5.4.1)")
    s.elect("n1")
    lead = w.node("n1")
    s.check(lead.term == 8, "n1 leads term 8, like the leader in Figure 7")
    s.note("n1 finds the last index where each follower agrees with it and overwrites the rest "
           "(§5.3): missing entries (a, b, e) are added, extra ones (c, d, f) are deleted")
    w.run(30)
    logs = {n: tuple(w.node(n).log.term_at(i) for i in range(1, w.node(n).log.last_index + 1))
            for n in w.ids}
    want = tuple(FIGURE7["n1"][1]) + (8,)
    s.check(all(log == want for log in logs.values()),
            "every follower's log now equals the leader's, whatever it held before (§5.3)")
    s.check(all(w.node(n).commit_index == 11 for n in w.ids),
            "the no-op of term 8 at index 11 commits, and with it everything before it (§5.4.2)")


def figure8(s: Script) -> None:
    cfg = dataclasses.replace(BASIC, max_append_entries=1)
    w = s.world(5, config=cfg)
    s.elect("n1")
    s.note("(a) n1 leads term 1 and replicates a write at index 2 to n2 only, then crashes")
    w.write(b"old")
    w.settle(where=lambda m: {m.src, m.dst} == {"n1", "n2"})
    w.drop(lambda m: m.src == "n1")
    w.crash("n1")
    s.note("(b) n5 is elected for term 2 with votes from n3, n4 and itself, appends an entry at "
           "index 2 and crashes before sending it")
    w.timeout("n5")
    w.settle(until=lambda: w.node("n5").role == Role.LEADER)
    w.drop(lambda m: m.src == "n5")
    w.crash("n5")
    s.note("(c) n1 restarts, wins a later term and copies its term-1 entry at index 2 to n3")
    w.restart("n1")
    n1 = w.node("n1")
    for _ in range(4):
        w.timeout("n1")
        if w.settle(until=lambda: n1.role == Role.LEADER):
            break
    trio = lambda m: {m.src, m.dst} <= {"n1", "n2", "n3"}  # noqa: E731 - a one-line message filter reads best as a lambda
    w.drop(lambda m: not trio(m))  # n4 plays no part in (c)
    w.settle(where=trio,
             until=lambda: all(n1.progress[p].match_index >= 2 for p in ("n2", "n3")))
    holders = [n for n in ("n1", "n2", "n3", "n4") if w.node(n).log.term_at(2) == 1]
    s.check(len(holders) >= 3 and n1.commit_index < 2,
            f"index 2 (term 1) is on {','.join(holders)}, a majority, yet n1 (term {n1.term}) "
            f"does not commit it: only entries of the leader's own term commit by counting "
            f"replicas (§5.4.2)")
    s.note("(d) n1 crashes; n5 restarts and wins a later term with votes from n3 and n4: its "
           "last entry (term 2) is more up to date than theirs (§5.4.1)")
    w.drop(lambda m: m.src == "n1")
    w.crash("n1")
    w.restart("n5")
    s.elect("n5")
    w.run(10)
    s.check(all(w.node(n).log.term_at(2) == 2 for n in w.live()),
            "n5 overwrote index 2 with its term-2 entry on every live node: had n1 counted the "
            "term-1 entry as committed, a committed entry would now be lost (Figure 8 (d))")
    s.note("(e) the fix in action: a leader commits older entries only together with an entry "
           "of its own term, here n5's no-op (§5.4.2)")
    w.restart("n1")
    w.run(20)
    s.check(len({tuple(w.node(n).log.slice(1, 99)) for n in w.ids}) == 1
            and w.node("n5").commit_index >= 3,
            "all five logs agree and n5 committed its no-op and index 2 with it (§5.4.2)")


def joint_consensus(s: Script) -> None:
    w = s.world(5, voters=["n1", "n2", "n3"])
    s.note("voters n1,n2,n3; n4 and n5 start empty, as servers that join later (§6)")
    s.elect("n1")
    w.write(b"x=1")
    w.run(4)
    w.partition(["n1", "n2", "n3"], ["n4", "n5"])
    s.note("n1 proposes C_new = n1,n4,n5: it appends the joint configuration C_old,new, which "
           "takes effect as soon as it is in a log; every decision now needs a majority of "
           "C_old AND of C_new (§6)")
    idx = w.reconfigure("n1", ["n1", "n4", "n5"])
    w.run(10)
    n1 = w.node("n1")
    s.check(n1.config.joint and n1.commit_index < idx,
            f"C_old,new (index {idx}) is on all of C_old, but n4 and n5 are cut off: without a "
            f"majority of C_new it is not committed (§6)")
    w.heal()
    s.check(w.run(40, until=lambda: not n1.config.joint and n1.commit_index >= idx + 1),
            "once C_old,new commits, n1 appends C_new by itself and commits it (§6)")
    w.run(6)
    s.check(sorted(n1.config.voters) == ["n1", "n4", "n5"],
            "the configuration is n1,n4,n5; n2 and n3 are no longer voters")
    w.partition(["n1", "n4", "n5"], ["n2", "n3"])
    at = s.expect(w.write(b"y=2"), "n1 to take y=2")
    w.run(6)
    s.check(n1.commit_index >= at, "with n2 and n3 cut off, n1,n4,n5 commit y=2 on their own: "
                                   "the new majority is all that counts (§6)")
    s.check(w.machine["n4"] == [b"x=1", b"y=2"], "n4 learned the whole log, x=1 included")


def snapshot_catch_up(s: Script) -> None:
    w = s.world(3)
    s.elect("n1")
    w.run(4)
    w.crash("n3")
    for i in range(6):
        w.write(f"k{i}=v{i}".encode())
        w.run(3)
    s.note("n1 and n2 snapshot their state machines and discard their logs (§7)")
    meta = w.snapshot("n1")
    w.snapshot("n2")
    w.restart("n3")
    w.run(12)
    n3 = w.node("n3")
    s.check(n3.log.snapshot_index >= meta.index and w.machine["n3"] == w.machine["n1"],
            f"n3 caught up through the snapshot at index {meta.index}: same state machine as n1, "
            f"log continuing after the snapshot (§7)")

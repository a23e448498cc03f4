"""The live cluster dashboard (`raftctl status --watch`) and the cluster analysis it shares
with `raftctl health`.

Everything here is a pure function of *snapshots*: a snapshot is what
``raftctl.cluster.gather_status`` returns (each node's raw status in ``node["_raw"]``, None
when the node is down) plus ``"time"``, the unix time of the poll.  A list of snapshots, oldest
first, is enough to draw every part of the dashboard:

    header       leader, term, configuration (stable/joint, voters, learners), quorum
    node table   id, address, role, term, commit/applied/last log/snapshot index, lag behind
                 the leader, ms since the node last heard from the leader, up or DOWN
    throughput   commits/s over the last minute (a sparkline of the leader's commit_index
                 deltas between polls) and the current rate
    events       every node's recent-events ring merged (deduplicated by node, time, text)
                 with the events the dashboard derives between polls: a node went down or came
                 back, the leader changed, the term changed

so the rendering is tested with ``rich.console.Console(record=True)`` over hand-made snapshots.
``Dashboard`` is the small stateful part: it keeps the last minute of snapshots and every event
seen so far (node rings vanish while a node is down; the dashboard still remembers them).
"""
from __future__ import annotations

import time
from collections import deque
from collections.abc import Iterable, Sequence
from datetime import datetime

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from .cluster import fault_tolerance, tolerates, unreachable_reason

WINDOW_S = 60.0  # throughput history shown
SPARK_CHARS = "▁▂▃▄▅▆▇█"
WATCH_SOURCE = "watch"  # the "node" of events the dashboard derives itself

Event = dict  # {"time": unix seconds, "node": id, "kind": str, "text": str}


# ------------------------------------------------------------------------ analysis --
def leader_node(snap: dict) -> dict | None:
    """The row of the node the snapshot names as leader (reachable by construction)."""
    lid = snap.get("leader")
    if lid is None:
        return None
    return next((n for n in snap["nodes"] if n["id"] == lid and n["reachable"]), None)


def _raw(node: dict | None) -> dict:
    return (node or {}).get("_raw") or {}


def node_lag(snap: dict, node: dict) -> int | None:
    """Entries ``node`` is behind the leader: the leader's last_log_index minus what the leader
    knows the node holds (its progress match_index) or, failing that, the node's applied index.
    None without a leader, or for a node the leader does not track and we cannot reach."""
    leader = leader_node(snap)
    if leader is None:
        return None
    lraw = _raw(leader)
    last = lraw.get("last_log_index", leader.get("last_log_index"))
    if last is None:
        return None
    if node["id"] != leader["id"]:
        prog = (lraw.get("progress") or {}).get(node["id"])
        if prog and prog.get("match_index") is not None:
            return max(0, last - prog["match_index"])
    applied = node.get("applied_index")
    if not node.get("reachable") or applied is None:
        return None
    return max(0, last - applied)


def analyze(snap: dict, max_lag: int | None = None) -> dict:
    """Quorum and lag of one snapshot: what the dashboard header and `raftctl health` show.

    A quorum is a majority of the voters reachable plus a leader.  (In a joint configuration
    the status lists the union of both voter sets; a majority of the union is what we check.)"""
    conf = snap.get("configuration") or {}
    voters = list(conf.get("voters") or [])
    by_id = {n["id"]: n for n in snap["nodes"]}
    reachable_voters = [v for v in voters if by_id.get(v, {}).get("reachable")]
    need = len(voters) // 2 + 1 if voters else 1
    leader = snap.get("leader")
    quorum = bool(voters) and leader is not None and len(reachable_voters) >= need
    lags = {n["id"]: node_lag(snap, n) for n in snap["nodes"]}
    lagging = sorted(v for v in reachable_voters
                     if max_lag is not None and (lags.get(v) or 0) > max_lag)
    reasons = []
    if not any(n["reachable"] for n in snap["nodes"]):
        why = unreachable_reason(snap)
        reasons.append(f"no node is reachable ({why})" if why else "no node is reachable")
    elif leader is None:
        reasons.append("no leader")
    if len(reachable_voters) < need or not voters:
        reasons.append(f"no quorum: {len(reachable_voters)} of {len(voters)} voters reachable "
                       f"(need {need})")
    for v in lagging:
        reasons.append(f"{v} lags {lags[v]} entries behind the leader (max {max_lag})")
    return {"leader": leader, "term": snap.get("term"), "voters": voters,
            "learners": list(conf.get("learners") or []), "joint": bool(conf.get("joint")),
            "reachable_voters": len(reachable_voters), "need": need, "quorum": quorum,
            "lags": lags, "lagging": lagging, "reasons": reasons,
            "fault_tolerance": fault_tolerance(  # how many MORE may fail (issue 16)
                conf, {n["id"] for n in snap["nodes"] if n["reachable"]}),
            "healthy": quorum and not lagging and not reasons}


# ---------------------------------------------------------------------- throughput --
def _leader_commit(snap: dict) -> int | None:
    leader = leader_node(snap)
    return None if leader is None else leader.get("commit_index")


def commit_rates(history: Sequence[dict], window: float = WINDOW_S) -> list[float]:
    """Commits per second between consecutive polls over the last ``window`` seconds, from the
    leader's commit_index (0 while there is no leader, or across a poll without one)."""
    if not history:
        return []
    end = history[-1]["time"]
    recent = [s for s in history if s["time"] >= end - window]
    rates = []
    for a, b in zip(recent, recent[1:], strict=False):
        dt = b["time"] - a["time"]
        ca, cb = _leader_commit(a), _leader_commit(b)
        if dt <= 0:
            continue
        rates.append(0.0 if ca is None or cb is None else max(0, cb - ca) / dt)
    return rates


def sparkline(values: Sequence[float], width: int = 60) -> str:
    """Unicode block sparkline of ``values`` (averaged down to at most ``width`` characters),
    scaled to the largest value; all zeros draw a flat line."""
    vals = list(values)
    if not vals:
        return ""
    if len(vals) > width:
        step = len(vals) / width
        vals = [sum(chunk) / len(chunk) for chunk in
                (vals[int(i * step):max(int((i + 1) * step), int(i * step) + 1)]
                 for i in range(width))]
    top = max(vals)
    if top <= 0:
        return SPARK_CHARS[0] * len(vals)
    last = len(SPARK_CHARS) - 1
    return "".join(SPARK_CHARS[min(last, int(round(v / top * last)))] for v in vals)


# -------------------------------------------------------------------------- events --
def node_events(snap: dict) -> list[Event]:
    """The recent-events rings of every reachable node of one snapshot."""
    out = []
    for n in snap["nodes"]:
        for e in _raw(n).get("events") or []:
            out.append({"time": e.get("time", 0), "node": n["id"], "kind": e.get("kind", ""),
                        "text": e.get("text", "")})
    return out


def derive_events(prev: dict | None, cur: dict) -> list[Event]:
    """What changed between two polls: nodes down/back, leader changed, term changed."""
    if prev is None:
        return []
    t = cur["time"]
    out = []

    def ev(kind: str, text: str) -> None:
        out.append({"time": t, "node": WATCH_SOURCE, "kind": kind, "text": text})

    before = {n["id"]: n for n in prev["nodes"]}
    for n in cur["nodes"]:
        p = before.get(n["id"])
        if p is None:
            continue
        if p["reachable"] and not n["reachable"]:
            ev("down", f"{n['id']} went down ({n['address']} unreachable)")
        elif not p["reachable"] and n["reachable"]:
            ev("up", f"{n['id']} came back ({n['role']}, term {n['term']})")
    if prev.get("leader") != cur.get("leader"):
        if cur.get("leader") is None:
            ev("leader", f"no leader (was {prev.get('leader')})")
        elif prev.get("leader") is None:
            ev("leader", f"leader is {cur['leader']} (term {cur.get('term')})")
        else:
            ev("leader", f"leader changed: {prev['leader']} -> {cur['leader']} "
                         f"(term {cur.get('term')})")
    if (prev.get("term") is not None and cur.get("term") is not None
            and prev["term"] != cur["term"]):
        ev("term", f"term changed: {prev['term']} -> {cur['term']}")
    return out


def merge_events(*sources: Iterable[Event]) -> list[Event]:
    """All events, deduplicated by (node, time, text), oldest first."""
    seen: dict[tuple, Event] = {}
    for src in sources:
        for e in src:
            seen.setdefault((e["node"], e["time"], e["text"]), e)
    return sorted(seen.values(), key=lambda e: (e["time"], e["node"]))


def history_events(history: Sequence[dict]) -> list[Event]:
    """Every event visible in a list of snapshots: node rings plus derived ones."""
    pairs = zip([None, *history], history, strict=False)  # (previous, current)
    derived = [e for a, b in pairs for e in derive_events(a, b)]
    return merge_events(*(node_events(s) for s in history), derived)


def format_time(t: float, ms: bool = True) -> str:
    dt = datetime.fromtimestamp(t)
    return dt.strftime("%H:%M:%S") + (f".{dt.microsecond // 1000:03d}" if ms else "")


def format_event(e: Event) -> str:
    return f"{format_time(e['time'])}  {e['node']:<8} {e['kind']:<8} {e['text']}"


# ------------------------------------------------------------------------ rendering --
def _fmt(v) -> str:
    return "-" if v is None else str(v)


def header_text(snap: dict, a: dict | None = None) -> Text:
    a = a or analyze(snap)
    t = Text()
    t.append("leader: ", style="bold")
    t.append(str(a["leader"]) if a["leader"] else "NONE",
             style="bold green" if a["leader"] else "bold red")
    t.append("   term: ", style="bold")
    t.append(_fmt(a["term"]))
    t.append("   configuration: ", style="bold")
    t.append("JOINT" if a["joint"] else "stable", style="yellow" if a["joint"] else "")
    t.append("   voters: ", style="bold")
    t.append(",".join(a["voters"]) or "-")
    t.append("   learners: ", style="bold")
    t.append(",".join(a["learners"]) or "-")
    t.append("\nquorum: ", style="bold")
    if a["quorum"]:
        t.append("healthy", style="bold green")
    else:
        t.append("LOST" if a["leader"] is None or a["reachable_voters"] < a["need"]
                 else "unhealthy", style="bold red")
    t.append(f" ({a['reachable_voters']}/{len(a['voters'])} voters reachable, need "
             f"{a['need']}{', a leader' if a['leader'] is None else ''})")
    if a["fault_tolerance"] is not None:
        t.append(f"   {tolerates(a['fault_tolerance'])}")
    if "time" in snap:
        t.append("   updated: ", style="bold")
        t.append(format_time(snap["time"], ms=False))
    if snap.get("poll_ms") is not None:
        t.append(f" (poll {snap['poll_ms']:.0f} ms)")
    for n in snap.get("nodes", []):  # TLS: a certificate (or CA) expiring within 30 days
        if n.get("cert_warning"):
            t.append(f"\nWARNING {n['id']}: {n['cert_warning']}", style="bold yellow")
    return t


def render_header(snap: dict, a: dict | None = None) -> Panel:
    return Panel(header_text(snap, a), title="raftd cluster", title_align="left",
                 box=box.ROUNDED)


NODE_COLUMNS = ["id", "address", "role", "term", "commit", "applied", "last log", "snapshot",
                "lag", "contact ms", "status"]  # contact: ms since it heard from the leader
_TEXT_COLUMNS = ("id", "address", "role", "status")


def node_rows(snap: dict, a: dict | None = None) -> list[list]:
    """The node table as plain values (None for unknown)."""
    a = a or analyze(snap)
    rows = []
    for n in snap["nodes"]:
        raw = _raw(n)
        role = n["role"]
        if role and n.get("member") not in (None, "voter"):
            role = f"{role} ({n['member']})"  # a learner, a leaving voter, a removed server
        rows.append([n["id"], n["address"], role, n["term"], n["commit_index"],
                     n["applied_index"], n["last_log_index"], raw.get("snapshot_index"),
                     a["lags"].get(n["id"]), raw.get("last_leader_contact_ms"),
                     "up" if n["reachable"] else "DOWN"])
    return rows


def render_nodes(snap: dict, a: dict | None = None, title: str | None = None) -> Table:
    a = a or analyze(snap)
    t = Table(title=title, header_style="bold", box=box.SIMPLE_HEAVY, expand=False)
    widest = max((len(str(n["address"])) for n in snap["nodes"]), default=0)
    for c in NODE_COLUMNS:
        t.add_column(c, justify="left" if c in _TEXT_COLUMNS else "right",
                     no_wrap=c in _TEXT_COLUMNS, min_width=widest if c == "address" else None)
    for row, n in zip(node_rows(snap, a), snap["nodes"], strict=True):
        cells = [Text(_fmt(v)) for v in row]
        if not n["reachable"]:
            cells[-1].stylize("bold red")
            for cell in cells[:-1]:
                cell.stylize("dim")
        else:
            cells[-1].stylize("green")
        if n["role"] == "leader":
            cells[2].stylize("bold green")
        elif n["role"] in ("candidate", "pre-candidate"):
            cells[2].stylize("yellow")
        lag = row[8]
        if lag is not None and lag > 0:
            cells[8].stylize("yellow" if lag < 1000 else "bold red")
        t.add_row(*cells)
    return t


def throughput_text(history: Sequence[dict], width: int = 60) -> Text:
    rates = commit_rates(history)
    t = Text()
    t.append("commits/s (last minute): ", style="bold")
    if not rates:
        t.append("waiting for a second poll")
        return t
    t.append(sparkline(rates, width), style="cyan")
    t.append("\ncurrent: ", style="bold")
    t.append(f"{rates[-1]:,.1f}/s")
    t.append(f"   average: {sum(rates) / len(rates):,.1f}/s   peak: {max(rates):,.1f}/s")
    return t


def render_throughput(history: Sequence[dict], width: int = 60) -> Panel:
    return Panel(throughput_text(history, width), title="throughput", title_align="left",
                 box=box.ROUNDED)


def render_events(events: Sequence[Event], limit: int = 12) -> Panel:
    shown = list(events)[-limit:] if limit > 0 else []
    t = Table.grid(padding=(0, 2))
    for _ in range(4):
        t.add_column()
    style = {"down": "bold red", "up": "green", "leader": "bold yellow", "term": "yellow",
             "role": "cyan", "transfer": "magenta", "snapshot": "blue",
             "membership": "magenta"}
    for e in reversed(shown):  # newest first
        t.add_row(format_time(e["time"]), e["node"], Text(e["kind"], style=style.get(e["kind"],
                                                                                    "")),
                  e["text"])
    if not shown:
        t.add_row("", "", "", "no events yet")
    return Panel(t, title=f"recent events ({len(shown)} of {len(events)}, newest first)",
                 title_align="left", box=box.ROUNDED)


def render(history: Sequence[dict], events: Sequence[Event] | None = None,
           max_events: int = 12, spark_width: int = 60) -> RenderableType:
    """The whole dashboard for ``history`` (snapshots, oldest first; the last one is shown).
    ``events`` defaults to everything visible in ``history``."""
    if not history:
        return Text("waiting for the first poll...")
    snap = history[-1]
    a = analyze(snap)
    evs = history_events(history) if events is None else events
    return Group(render_header(snap, a), render_nodes(snap, a),
                 render_throughput(history, spark_width), render_events(evs, max_events))


def plain_title(snap: dict, history: Sequence[dict] = ()) -> str:
    """One-line summary used above each table in piped (non-TTY) mode."""
    a = analyze(snap)
    rates = commit_rates(history) if history else []
    conf = "joint" if a["joint"] else "stable"
    return (f"{format_time(snap.get('time', time.time()), ms=False)}  leader: "
            f"{a['leader'] or 'none'}  term: {_fmt(a['term'])}  configuration: {conf} "
            f"voters: {','.join(a['voters']) or '-'}"
            + (f" learners: {','.join(a['learners'])}" if a["learners"] else "")
            + f"  quorum: {'ok' if a['quorum'] else 'LOST'} ({a['reachable_voters']}/"
            f"{len(a['voters'])})"
            + (f"  {tolerates(a['fault_tolerance'])}" if a["fault_tolerance"] is not None else "")
            + (f"  commits/s: {rates[-1]:.1f}" if rates else ""))


def render_plain(snap: dict, history: Sequence[dict] = ()) -> Table:
    """The piped-mode table: no colours needed, one per refresh."""
    a = analyze(snap)
    t = Table(title=plain_title(snap, history), header_style="bold", title_justify="left")
    for c in NODE_COLUMNS:
        t.add_column(c)
    for row in node_rows(snap, a):
        t.add_row(*[_fmt(v) for v in row])
    return t


# --------------------------------------------------------------------------- state --
class Dashboard:
    """The last minute of snapshots and every event seen so far."""

    def __init__(self, window: float = WINDOW_S, max_events: int = 500):
        self.window = window
        self.history: deque[dict] = deque()
        self._events: dict[tuple, Event] = {}
        self._max_events = max_events

    def add(self, snap: dict) -> list[Event]:
        """Record a poll; returns the events not seen before (oldest first)."""
        snap.setdefault("time", time.time())
        prev = self.history[-1] if self.history else None
        self.history.append(snap)
        while self.history and self.history[0]["time"] < snap["time"] - self.window - 5:
            self.history.popleft()
        new = []
        for e in merge_events(node_events(snap), derive_events(prev, snap)):
            key = (e["node"], e["time"], e["text"])
            if key not in self._events:
                self._events[key] = e
                new.append(e)
        if len(self._events) > self._max_events:
            keep = sorted(self._events.items(), key=lambda kv: kv[1]["time"])
            self._events = dict(keep[-self._max_events:])
        return new

    @property
    def events(self) -> list[Event]:
        return sorted(self._events.values(), key=lambda e: (e["time"], e["node"]))

    def render(self, max_events: int = 12, spark_width: int = 60) -> RenderableType:
        return render(list(self.history), self.events, max_events, spark_width)

"""Draw one Frame with rich: nodes (role, term, vote, election timer, log), messages in flight,
and the narrative.  Pure: Frame in, renderable out (tests render it to plain text)."""
from __future__ import annotations

from rich.console import Group
from rich.layout import Layout
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from raftd.core import (AppendEntries, AppendEntriesResponse, InstallSnapshot, PreVote,
                        PreVoteResponse, RequestVote, RequestVoteResponse, TimeoutNow)

from .model import Flight, Frame, NodeView

ROLE_STYLE = {"leader": "bold green", "candidate": "bold yellow", "pre-candidate": "yellow",
              "follower": "cyan", "learner": "blue", "down": "bold red"}
TERM_COLOURS = ["grey50", "blue", "magenta", "green", "yellow", "cyan", "red", "bright_blue",
                "bright_magenta", "bright_green", "bright_yellow", "bright_cyan"]
LOG_CELLS = 28
KEYS_HELP = ("space pause  . step  +/- speed  1-9 crash/restart  k crash leader  "
             "p<n> isolate/heal  r write  q quit")


def term_style(term: int) -> str:
    return TERM_COLOURS[term % len(TERM_COLOURS)]


def timer_bar(n: NodeView, width: int = 12) -> Text:
    """The election timer as a bar that drains to empty when the timeout fires (§5.2)."""
    if not n.up:
        return Text("")
    if n.role == "leader":
        return Text("heartbeats".ljust(width), style="green")
    full = round(width * n.timer_left / n.timer_total) if n.timer_total else 0
    style = "red" if n.timer_left <= 3 else "white"
    return Text("█" * full + "·" * (width - full), style=style)


def log_cells(n: NodeView) -> Text:
    """One cell per entry, coloured by term, showing the term; committed entries are bold and
    a '|' marks the commit index."""
    text = Text()
    first = n.log_base + 1
    start = max(0, len(n.log_terms) - LOG_CELLS)
    if n.log_base or start:
        text.append(f"…{first + start - 1}", style="dim")
    for pos in range(start, len(n.log_terms)):
        index, term = first + pos, n.log_terms[pos]
        committed = index <= n.commit_index
        text.append(f"{term % 100:>2}", style=term_style(term) + (" bold" if committed else " dim"))
        if index == n.commit_index:
            text.append("|", style="bold white")
    return text


def nodes_table(f: Frame) -> Table:
    t = Table(expand=True, box=None, pad_edge=False)
    for col, width in (("node", 6), ("role", 14), ("term", 5), ("vote", 5),
                       ("election timer", 14)):
        t.add_column(col, no_wrap=True, width=width)
    t.add_column("log (term per entry, | = commit index)", no_wrap=True, ratio=1)
    for n in f.nodes:
        role = Text(n.role.upper() if n.role == "leader" else n.role,
                    style=ROLE_STYLE.get(n.role, "white"))
        if n.cut:
            role.append(" cut", style="bold red")
        t.add_row(Text(n.id, style="bold"), role, str(n.term), n.voted_for or "-",
                  timer_bar(n), log_cells(n))
    return t


def describe(msg) -> str:
    """A message as one short line: type, from -> to, what it carries."""
    arrow = f"{msg.src}->{msg.dst}"
    if isinstance(msg, AppendEntries):
        what = f"{len(msg.entries)} entries" if msg.entries else "heartbeat"
        return f"AppendEntries {arrow} t{msg.term} {what} commit={msg.leader_commit}"
    if isinstance(msg, AppendEntriesResponse):
        return (f"AppendEntries reply {arrow} t{msg.term} "
                + (f"ok match={msg.match_index}" if msg.success else "REJECT"))
    if isinstance(msg, RequestVote):
        return f"RequestVote {arrow} t{msg.term} last={msg.last_log_index}/t{msg.last_log_term}"
    if isinstance(msg, RequestVoteResponse):
        return f"vote {arrow} t{msg.term} " + ("GRANTED" if msg.granted else "refused")
    if isinstance(msg, PreVote):
        return f"PreVote {arrow} for t{msg.term}"
    if isinstance(msg, PreVoteResponse):
        return f"pre-vote {arrow} " + ("yes" if msg.granted else "no")
    if isinstance(msg, InstallSnapshot):
        return f"InstallSnapshot {arrow} index={msg.last_included_index}"
    if isinstance(msg, TimeoutNow):
        return f"TimeoutNow {arrow}"
    return f"{type(msg).__name__} {arrow}"


def flights_text(flights: tuple[Flight, ...], time: int, limit: int) -> Text:
    text = Text()
    for fl in sorted(flights, key=lambda fl: fl.seq)[:limit]:
        span = max(fl.deliver_at - fl.sent_at, 1)
        done = min(max(time - fl.sent_at, 0), span)
        text.append("─" * (2 * done) + ">" + " " * (2 * (span - done)) + " ", style="dim")
        style = "yellow" if isinstance(fl.msg, (RequestVote, PreVote)) else "white"
        text.append(describe(fl.msg) + "\n", style=style)
    if len(flights) > limit:
        text.append(f"... and {len(flights) - limit} more\n", style="dim")
    return text


def render(f: Frame, status: str = "", narrative_lines: int = 12) -> Layout:
    """The whole screen for one frame; ``status`` is the driver's line (speed, paused, keys)."""
    header = Text(f"raftctl sim  {f.title}  t={f.time}  {status}", style="bold")
    layout = Layout()
    layout.split_column(
        Layout(Panel(Group(header, Text(KEYS_HELP, style="dim")), padding=(0, 1)), size=4),
        Layout(Panel(nodes_table(f), title="nodes"), size=len(f.nodes) + 3),
        Layout(name="bottom"))
    story = Text("\n".join(f.narrative[-narrative_lines:]))
    layout["bottom"].split_row(
        Layout(Panel(flights_text(f.flights, f.time, 14), title="messages in flight"), ratio=2),
        Layout(Panel(story, title="what happens (paper sections)"), ratio=3))
    return layout

"""What a person reads, as pure functions of data: lines that fit a width.

Every function here takes the data (events, outcomes, records) and a width and returns lines
(`Line`: text and a style); nothing here knows about a terminal or prints. tcsession.ui prints
them (on a terminal at its width; into a pipe at $COLUMNS, else 80), and the golden tests render
the same lines from recorded data.

Wrapping is at spaces only, with continuation lines indented under the text they continue, so
no line is cut mid-phrase at any width; a single word longer than the room left (a long path)
is the only thing ever folded, and it is folded on an indented line of its own.
"""

from __future__ import annotations

import dataclasses
import re
import textwrap

from tcsession.text import printable

#: (text, rich style) for one printed line
Line = tuple[str, str]

HOST_COLUMN = 10  # the host names' column in progress lines (longer names push the text right)
LOG_INDENT = 6  # a failed step's log lines, one per line, under its host line


def wrap(text: str, width: int, indent: int, first: str = "") -> list[str]:
    """`first` + `text` wrapped at spaces to `width` columns, continuation lines indented by
    `indent` spaces (never fewer than 20 columns of text)."""
    width = max(width, indent + 20)
    # a command in backquotes stays on one line (it is copied whole), unless longer than a line
    text = _CODE.sub(lambda m: m[0].replace(" ", _KEEP) if len(m[0]) <= width - indent else m[0], text)
    lines = textwrap.wrap(text, width=width, initial_indent=first, subsequent_indent=" " * indent,
                          break_long_words=True, break_on_hyphens=False, drop_whitespace=True) or [first.rstrip()]
    return [line.replace(_KEEP, " ") for line in lines]


_CODE = re.compile(r"`[^`\n]+`")
_KEEP = "\u00a0"  # a space no line is broken at (textwrap breaks at ASCII whitespace only)


def _prefix(host: str) -> str:
    return f"  {host:<{HOST_COLUMN}} "


def step_lines(host: str, what: str, seconds: float | None, width: int, style: str = "") -> list[Line]:
    """A progress line, `  host       what  1.2 s`, wrapped under its text."""
    first = _prefix(host)
    text = " ".join(printable(what).split())
    if seconds is not None:  # kept with the text's last word: never alone on a line
        text += f"{_KEEP * 2}{seconds:.1f}{_KEEP}s"
    return [(line, style) for line in wrap(text, width, len(first), first)]


def said_lines(text: str, width: int, style: str = "") -> list[Line]:
    """A sentence from tcsession (a note, a warning): its leading spaces kept, continuation lines
    indented two more."""
    out: list[Line] = []
    for part in printable(text).splitlines() or [""]:  # each line of the text its own sentence
        lead = len(part) - len(part.lstrip(" "))
        out += [(line, style) for line in wrap(" ".join(part.split()), width, lead + 2, " " * lead)]
    return out


def split_failure(text: str) -> tuple[str, list[str]]:
    """A failed step's text: its message, and the service's log lines (one per line after a line
    ending "last log lines:", as tcsession.steps.summarize writes them)."""
    head, sep, logs = printable(text).partition("\nlast log lines:\n")
    head = " ".join(head.split())
    if sep:
        head += "; last log lines:"
    return head, [l for l in logs.splitlines() if l.strip()]


def failure_lines(host: str, text: str, seconds: float | None, width: int) -> list[Line]:
    """A failed step, once: its host line (how long it ran, what failed), then each log line
    indented on its own line(s)."""
    head, logs = split_failure(text)
    head = head.removeprefix(f"{host}: ")
    took = f"after {seconds:.1f} s: " if seconds is not None else ""
    out = step_lines(host, f"FAILED {took}{head}", None, width, "bold red")
    for log in logs:
        out += [(line, "red") for line in wrap(" ".join(log.split()), width, LOG_INDENT + 2, " " * LOG_INDENT)]
    return out


# --------------------------------------------------------------------------- end of a run


@dataclasses.dataclass(frozen=True)
class HostRecap:
    host: str
    result: str  # "changed" | "ok" | "failed" | "interrupted" | "not reached"
    steps: int  # steps done
    planned: int  # steps planned for it
    changes: int  # steps done that changed something
    seconds: float


def recap(hosts: list[str], planned: list, executed: list, where: dict[str, str],
          seconds: dict[str, float]) -> list[HostRecap]:
    """Each host at the end of a run: from the steps planned and executed (tcsession.steps), where
    the interpreter left each host (tcsession.apply.Outcome.hosts) and the seconds spent on it.
    A host is "not reached" when it had steps and none ran (the run stopped before them)."""
    out = []
    for h in hosts:
        mine = [s for s in planned if s.host == h and type(s).__name__ != "Replan"]
        done = [s for s in executed if s.host == h and type(s).__name__ != "Replan"]
        changes = sum(1 for s in done if not s.check_only)
        state = where.get(h, "")
        if state.startswith(("failed", "interrupted")):
            result = "failed" if state.startswith("failed") else "interrupted"
        elif mine and not done:
            result = "not reached"
        else:
            result = "changed" if changes else "ok"
        out.append(HostRecap(h, result, len(done), max(len(mine), len(done)), changes, seconds.get(h, 0.0)))
    return out


_RECAP_STYLE = {"changed": "yellow", "ok": "green", "failed": "bold red", "interrupted": "bold red",
                "not reached": "red"}


def recap_lines(rows: list[HostRecap], width: int) -> list[Line]:
    """One line per host: `  tomcat1    changed      5 steps, 3 changes   12.3 s` (`2 of 5 steps`
    when the run stopped before the rest)."""
    out: list[Line] = [("recap:", "bold")]
    for r in rows:
        counts = (f"{r.steps} of {r.planned} step{'s' if r.planned != 1 else ''}" if r.steps < r.planned else
                  f"{r.steps} step{'s' if r.steps != 1 else ''}") + f", {r.changes} change{'s' if r.changes != 1 else ''}"
        text = f"{r.result:<12} {counts:<22} {r.seconds:5.1f}{_KEEP}s"
        out += [(line, _RECAP_STYLE[r.result])
                for line in wrap(text, width, len(_prefix(r.host)), _prefix(r.host))]
    return out


def dry_run_line(steps: list, width: int) -> list[Line]:
    """The frame's last line: what the dry run showed, and that nothing changed."""
    hosts = len({s.host for s in steps})
    return said_lines(f"dry run: nothing was changed: {len(steps)} step{'s' if len(steps) != 1 else ''} on "
                      f"{hosts} host{'s' if hosts != 1 else ''}", width, "bold")


# --------------------------------------------------------------------------- history


def history_lines(hist: dict, notes, width: int, war_versions=None) -> list[Line]:
    """Every deploy, oldest first: its full id (what `rollback --to` takes) on a line that
    starts with it, then its hosts, files and applications indented under it."""
    ids = sorted({r.id for recs in hist.values() for r in recs})
    out: list[Line] = [(f"tcsession deploys, newest last: {len(ids)}", "bold")]
    for i in ids:
        recs = [r for recs in hist.values() for r in recs if r.id == i]
        state = "rolled back" if all(r.rolled_back for r in recs) else "applied"
        out.append((f"{i}  {state}", "bold" if state == "applied" else "dim"))
        detail = (f"mode {printable(recs[0].mode)}, {printable(recs[0].manifest.time)}, hosts "
                  f"{', '.join(r.host for r in recs)}, {sum(len(r.files) for r in recs)} files")
        out += [(line, "") for line in wrap(detail, width, 4, "  ")]
        if any(r.manifest.kind == "upgrade" for r in recs):
            pkgs = "; ".join(f"{r.host}: " + ", ".join(f"{n} {a} -> {b}" for n, a, b in r.manifest.packages_changed)
                             for r in recs if r.manifest.packages_changed)
            out += [(line, "") for line in wrap(f"upgrade: {printable(pkgs or 'restarts owed only')}", width, 4, "  ")]
        apps = war_versions(recs) if war_versions else "-"
        if apps != "-":
            out += [(line, "") for line in wrap(f"applications: {printable(apps)}", width, 4, "  ")]
    for n in notes:
        out += said_lines(n, width, "yellow")
    return out


def upgrade_lines(changes: dict, pkgs: dict, width: int) -> list[Line]:
    """`upgrade`: per host, each package from -> to (security ones marked) and the restarts owed."""
    out: list[Line] = []
    for host, hu in changes.items():
        security = {n for n, p in pkgs[host].packages.items() if p.security} if host in pkgs else set()
        for n, a, b in hu.changes:
            out += [(l, "") for l in wrap(f"{host}: {n} {a} -> {b}" + (" (security)" if n in security else ""),
                                          width, 4, "")]
        for unit, why in hu.owed.items():
            out += [(l, "yellow") for l in wrap(f"{host}: {unit} restart owed: {why}", width, 4, "")]
    return [(printable(t), st) for t, st in out]

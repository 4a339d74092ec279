"""Everything printed for a person: progress from events, plans and diffs, the status report,
the history table, JSON. Executors and judges only produce data and events; this renders them.

Text that comes from hosts (file contents in diffs, log lines, command output) is printed with
its control characters escaped and without rich markup interpretation.
"""

from __future__ import annotations

import contextlib
import json
import textwrap
import time

from tcsession.apply import Event
from tcsession.steps import Plan, RestartTomcat, RestoreFiles, WriteFiles
from tcsession import view
from tcsession.text import printable

def _console(stderr: bool = False):
    from rich.console import Console

    return Console(highlight=False, stderr=stderr)


class Pipe:
    """Where a Progress prints when its stream is not a terminal (a pipe, a file, a CI log): each
    line as it is and at once, the same text rich writes there (styles are dropped off a terminal),
    without loading rich: 15 ms of each deploy that prints, on its way to its first line."""

    is_terminal = False

    def __init__(self, file):
        self.file = file

    def line(self, text: str) -> None:
        try:
            self.file.write(text + "\n")
            self.file.flush()
        except BrokenPipeError:  # the reader left (`| head`): the deploy goes on, unprinted
            self._gone()

    def _gone(self) -> None:
        """The stream's descriptor pointed at /dev/null (as rich does), so that nothing written
        later, nor Python's last flush at exit, raises again. rich then ends the process
        (SystemExit), which could stop a rolling deploy between two restarts: here the run goes on
        to its end, and its exit code still says how it went."""
        import os

        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, self.file.fileno())
        os.close(devnull)


def progress_console(stderr: bool = False):
    """A Progress's console: a Pipe off a terminal, else rich's (FORCE_COLOR and rich's other
    settings that make a pipe a terminal are rich's to honour)."""
    import os
    import sys

    stream = sys.stderr if stderr else sys.stdout
    forced = any(os.environ.get(v) for v in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"))
    if not forced and not stream.isatty():
        return Pipe(stream)
    return _console(stderr)


UNBOUNDED = 10**6  # a pipe with no width said: one printed line per line (for grep)
WARNING = "warning: "  # a check that passes with a warning (its detail starts with it): shown "warn", yellow


def fit_width(console, width: int | None = None) -> int:
    """The width lines are fitted to: `width` if given; on a terminal, its width; into a pipe,
    $COLUMNS when set, else none (a pipe cuts nothing: each line whole, for grep and files)."""
    import os

    if width:
        return width
    if console.is_terminal:
        return console.width
    columns = os.environ.get("COLUMNS", "")
    return int(columns) if columns.isdigit() and int(columns) > 0 else UNBOUNDED


def _print(console, lines) -> None:
    """Lines already fitted to the console's width (tcsession.view): printed as they are, never
    wrapped again by rich."""
    if isinstance(console, Pipe):
        for text, _ in lines:
            console.line(text)
        return
    from rich.text import Text

    for text, style in lines:
        console.print(Text(text, style=style), soft_wrap=True)


def print_stopped(text: str, console=None, width: int | None = None) -> None:
    """The last line of a run that stopped after its progress showed the failure and the recap:
    what to do, wrapped like the rest (on stderr)."""
    console = console if console is not None else _console(stderr=True)
    _print(console, view.said_lines(text, fit_width(console, width)))


def status_console(as_json: bool = False):
    """Where a read-only command's spinner goes: stdout's terminal (nothing with --json: stdout
    carries the JSON, and a spinner there would mix with it)."""
    from rich.console import Console

    return Console(highlight=False, stderr=as_json, force_terminal=False if as_json else None)


@contextlib.contextmanager
def waiting(what: str, console=None):
    """A long wait outside a deploy's steps (reading the hosts, a session check): on a terminal a
    spinner with `what` and the seconds so far, erased at the end; elsewhere nothing."""
    console = console if console is not None else _console(stderr=True)
    if not console.is_terminal:
        yield
        return
    w = _Waiting(console, what)
    try:
        yield
    finally:
        w.stop()


class _Waiting:
    """On a terminal only: a spinner with the steps under way and the seconds since they started,
    erased when they end (the finished steps' lines replace it)."""

    def __init__(self, console, what: str = ""):
        from rich.live import Live
        from rich.spinner import Spinner

        self.steps: list = []
        self.label = what
        self.console = console
        self.started = time.monotonic()
        self.spinner = Spinner("dots", style="cyan")
        self.live = Live(console=console, transient=True, refresh_per_second=4, get_renderable=self._render)
        self.live.start()

    def what(self) -> str:
        if self.label or not self.steps:
            return self.label
        if len(self.steps) == 1:
            return f"{self.steps[0].host}: {self.steps[0].describe()}"
        return f"{len(self.steps)} steps on " + ", ".join(dict.fromkeys(s.host for s in self.steps))

    def _render(self):
        from rich.text import Text

        seconds = time.monotonic() - self.started
        text = f" {seconds:3.0f} s  {' '.join(self.what().split())}"  # the seconds first: always seen
        room = max(10, self.console.width - 4)
        self.spinner.update(text=Text(text if len(text) <= room else text[:room - 1] + "…", style="dim"))
        return self.spinner

    def stop(self) -> None:
        self.live.stop()


class Progress:
    """Which host, which step, how long: one line per step (no markup from outside), wrapped at
    the console's width under its text; on stderr when stdout carries JSON (--json). On a terminal,
    a spinner with the elapsed seconds while steps run. `console`: a rich Console (the goldens give
    one of a fixed width)."""

    def __init__(self, quiet: bool = False, stderr: bool = False, console=None, width: int | None = None):
        self._console = console
        self._stderr = stderr
        self._width = width
        self.quiet = quiet
        self.started = time.monotonic()
        self._waiting: _Waiting | None = None
        self.showed_failure = False  # a failed step's lines were printed (tcsession.deploy.stopped)

    @property
    def console(self):
        """The console (progress_console: off a terminal a Pipe, without rich), made when first
        printed to: --quiet never makes one (rich's 25 ms of CPU, during the connections)."""
        if self._console is None:
            self._console = progress_console(self._stderr)
        return self._console

    @property
    def shows(self) -> bool:
        """Whether failures and recaps are shown (not --quiet): the final error then only says what to do."""
        return not self.quiet

    @property
    def width(self) -> int:
        return fit_width(self.console, self._width)

    def _out(self, lines_for) -> None:
        """lines_for(width): the lines fitted to the console's width; not even made when quiet."""
        if not self.quiet:
            self._stop_waiting()
            _print(self.console, lines_for(self.width))

    def line(self, host: str, what: str, seconds: float | None = None, style: str = "") -> None:
        self._out(lambda width: view.step_lines(host, what, seconds, width, style))

    def say(self, text: str, style: str = "") -> None:
        self._out(lambda width: view.said_lines(text, width, style))

    def event(self, e: Event) -> None:
        """The interpreter's callback."""
        if e.kind == "started":
            self._start_waiting(e)
        elif e.kind == "done":
            self.line(e.step.host, e.text, e.seconds)
        elif e.kind == "failed":
            self._out(lambda width: view.failure_lines(e.step.host, e.text, e.seconds, width))
            self.showed_failure = not self.quiet

    def recap(self, rows) -> None:
        """The end of a run: one line per host (tcsession.view.recap)."""
        self._out(lambda width: view.recap_lines(rows, width))

    def upgrade_table(self, changes: dict, pkgs: dict) -> None:
        self._out(lambda width: view.upgrade_lines(changes, pkgs, width))

    def dry_run(self, steps) -> None:
        self._out(lambda width: view.dry_run_line(steps, width))

    @contextlib.contextmanager
    def waiting(self, what: str):
        """A long wait between steps (facts, preflight's probes): a spinner on a terminal."""
        if self.quiet:
            yield
            return
        self._stop_waiting()
        with waiting(what, self.console):
            yield

    def _start_waiting(self, e: Event) -> None:
        if self.quiet or not self.console.is_terminal:
            return
        if self._waiting is None:
            self._waiting = _Waiting(self.console)
        self._waiting.steps.append(e.step)

    def _stop_waiting(self) -> None:
        if self._waiting is not None:
            self._waiting.stop()
            self._waiting = None

    def diff(self, diff: str) -> None:
        """A unified diff, coloured by line, never wrapped (it must stay a valid patch)."""
        if self.quiet:
            return
        self._stop_waiting()
        styles = {"+": "green", "-": "red", "@": "cyan"}
        _print(self.console, [(printable(line), "bold" if line.startswith(("+++", "---")) else styles.get(line[:1], ""))
                              for line in diff.splitlines()])

    def plan(self, plan: Plan, diffs: bool, hosts: list[str] | None = None) -> None:
        """Every step in order, as it will run; with `diffs`, each file's diff under its step."""
        if plan.empty:
            for h in hosts or ():
                self.line(h, "up to date", style="dim")
            return
        for s in plan.steps:
            self.line(s.host, s.describe(), style="yellow")
            if diffs and isinstance(s, (WriteFiles, RestoreFiles)):
                for c in s.changes:
                    self.diff(c.diff())
            if diffs and isinstance(s, RestartTomcat):  # the applications' files, written during it
                for c in s.files:
                    self.diff(c.diff())


# --------------------------------------------------------------------------- status


def _wrap(text: str, width: int, indent: int) -> list[str]:
    """Wrapped at spaces only (never inside a word); continuation lines indented."""
    return textwrap.wrap(text, width=max(20, width), subsequent_indent=" " * indent,
                         break_long_words=False, break_on_hyphens=False) or [""]


def render_status(report, width: int = 100) -> list[tuple[str, str]]:
    """The status report as (text, style) lines that fit `width` columns: a header line per host,
    then one line per check ("ok" / "FAIL", what, detail), wrapped at spaces with a hanging indent."""
    out: list[tuple[str, str]] = []
    title = f"tcsession: {len(report.hosts)} hosts" + (f", mode {report.mode}" if report.mode else "")
    out.append((title, "bold"))
    for h in report.hosts:
        f = h.facts
        head = f"{h.name} ({h.role}) {h.address}"
        if f:
            pkgs = ", ".join(f"{k} {v.split('-')[0].split(':')[-1]}" for k, v in f.packages.items() if k != "curl")
            head += f"  {f.os_short}, systemd {f.system_state}" + (f", {pkgs}" if pkgs else "")
        else:
            head += "  unreachable"
        out += [(line, "bold") for line in _wrap(printable(head), width, 4)]
        if not h.reachable:
            out += [(line, "red") for line in _wrap("  FAIL " + printable(h.error or "unreachable"), width, 7)]
        if f and f.system_state != "running":
            failed = ", ".join(f.failed_units) or "no failed unit listed"
            out += [(line, "yellow") for line in _wrap(f"  warn systemd {f.system_state} ({failed})", width, 7)]
        for what, ok, detail in h.checks:
            quiet = detail in ("active", "listening", "present")
            if ok and detail.startswith(WARNING):  # passes, and says what to do (e.g. automatic upgrades)
                out += [(line, "yellow") for line in _wrap(printable(f"  warn {what}: {detail[len(WARNING):]}"), width, 7)]
                continue
            text = ("  ok   " if ok else "  FAIL ") + what + ("" if ok and quiet else f": {detail}")
            out += [(line, "green" if ok else "red") for line in _wrap(printable(text), width, 7)]
        for what, detail in getattr(h, "notes", ()):
            out += [(line, "yellow") for line in _wrap(printable(f"  warn {what}: {detail}"), width, 7)]
        if h.members:
            out += [(line, "dim") for line in _wrap(f"       members: {', '.join(h.members)}", width, 7)]
    s = report.session
    if s is None and report.session_note:
        out += [(line, "yellow") for line in _wrap("session through nginx: " + report.session_note, width, 2)]
    if s is not None and s.path != "/test.jsp":
        text = f"GET {s.path} through nginx: {s.requests} requests, {s.failed} failed (no test page: sessions not checked)"
        out += [(line, "green" if s.ok else "red") for line in _wrap(printable(text), width, 2)]
        for e in s.errors[:5]:
            out += [(line, "red") for line in _wrap("  " + printable(e), width, 4)]
    elif s is not None:
        served = ", ".join(f"{n} x{c}" for n, c in s.nodes.items()) or "nobody"
        text = (f"session through nginx: {s.requests} requests, {s.failed} failed, {s.lost_updates} lost "
                f"updates, count reached {s.last_count}, served by {served}")
        out += [(line, "green" if s.ok else "red") for line in _wrap(printable(text), width, 2)]
        for e in s.errors[:5]:
            out += [(line, "red") for line in _wrap("  " + printable(e), width, 4)]
    for node, addr, items in report.memcached:
        here = " <- the check's session" if node == report.session_node else ""
        text = f"memcached {node} {addr}: " + ("unreachable" if items is None else f"{items} items" + (
            " (holds sessions)" if items else " (no sessions)")) + here
        out += [(line, "red" if items is None else "") for line in _wrap(text, width, 4)]
    if report.memcached and s is not None and s.session_ids:
        text = f"the check's session {s.session_ids[-1]} lives on memcached node {report.session_node or 'none'}"
        out += [(line, "red" if report.msm_problems else "") for line in _wrap(printable(text), width, 4)]
    for p in report.msm_problems:
        out += [(line, "red") for line in _wrap(printable(p), width, 4)]
    for ctx, nodes in getattr(report, "apps", ()):
        text = f"application {ctx}: " + ", ".join(f"{n} {sha[:12] if sha else 'no WAR'} (HTTP {code})"
                                                  for n, sha, code in nodes)
        out += [(line, "") for line in _wrap(printable(text), width, 4)]
    for p in getattr(report, "app_problems", ()):
        out += [(line, "red") for line in _wrap(printable(p), width, 4)]
    for p in getattr(report, "mode_problems", ()):
        out += [(line, "red") for line in _wrap(printable(p), width, 4)]
    for a in getattr(report, "advice", ()):
        out += [(line, "yellow") for line in _wrap(printable(f"advice: {a}"), width, 4)]
    out.append(("healthy" if report.healthy else "UNHEALTHY", "bold green" if report.healthy else "bold red"))
    return out


def print_status(report, as_json: bool = False, console=None, graph: bool = False, width: int | None = None) -> None:
    """The status report fitted to the width (fit_width: a terminal's; into a pipe $COLUMNS, else
    one line per check, for grep); with `graph`, the picture of the cluster (tcsession.graph) after it."""
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    console = console if console is not None else _console()
    width = fit_width(console, width)
    _print(console, render_status(report, width))
    if graph:
        print_graph(report, console, width)


def print_graph(report, console=None, width: int | None = None) -> None:
    """The picture of the cluster (tcsession.graph.topology), drawn by rich at the width (with no
    width into a pipe, rich's 80 columns: a tree needs one)."""
    from tcsession.graph import topology

    console = console if console is not None else _console()
    width = min(fit_width(console, width), console.width if width is None else width)
    console.print(topology(report, width), width=width)


# --------------------------------------------------------------------------- preflight


def render_preflight(report, width: int = 100) -> list[tuple[str, str]]:
    """One block per host, one line per check, in status's style."""
    out = [(f"tcsession preflight: {len(report.hosts)} hosts, mode {report.mode}", "bold")]
    for h in report.hosts:
        out.append((f"{h.name} ({h.role}, {h.address})", "bold" if not h.problems else "bold red"))
        for what, ok, detail in h.checks:
            if ok and detail.startswith(WARNING):
                out += [(line, "yellow") for line in _wrap(printable(f"  warn {what}: {detail[len(WARNING):]}"), width, 7)]
                continue
            text = ("  ok   " if ok else "  FAIL ") + what + f": {detail}"
            out += [(line, "green" if ok else "red") for line in _wrap(printable(text), width, 7)]
    out.append(("preflight passed" if report.ok else "PREFLIGHT FAILED", "bold green" if report.ok else "bold red"))
    return out


def print_preflight(report, as_json: bool = False, console=None, width: int | None = None) -> None:
    if as_json:
        print(json.dumps(report.to_dict(), indent=2))
        return
    console = console if console is not None else _console()
    _print(console, render_preflight(report, fit_width(console, width)))


# --------------------------------------------------------------------------- history


def war_versions(recs) -> str:
    """The WARs one deploy rolled out (the same bytes on every node, or each host's): name sha256."""
    by_war: dict[str, set] = {}
    for r in recs:
        for e in r.files:
            if e.path.endswith(".war") and "/webapps/" in e.path:
                by_war.setdefault(e.path.rsplit("/", 1)[1], set()).add(e.after_sha256)
    return ", ".join(f"{name} {' / '.join(sorted((s or 'removed')[:12] for s in shas))}"
                     for name, shas in sorted(by_war.items())) or "-"


def print_history(hist: dict, notes: list[str] = (), as_json: bool = False, console=None,
                  width: int | None = None) -> None:
    """Every deploy with its full id (what `rollback --to` takes), at the console's width."""
    if as_json:
        print(json.dumps({"deploys": {h: [r.to_dict() for r in recs] for h, recs in hist.items()},
                          "notes": list(notes)}, indent=2))
        return
    console = console if console is not None else _console()
    _print(console, view.history_lines(hist, notes, fit_width(console, width), war_versions))

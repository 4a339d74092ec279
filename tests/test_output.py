"""Output for people, as golden text at 80 and 120 columns, into a pipe and on a terminal.

The runs are recorded ones (tests/outputs.py: the real planner, interpreter, history reader and
status judges over data captured on lab hosts, SSH answered by a strict test double, a fixed
clock), printed by tcsession.ui: into a string by a rich Console of that width (a pipe whose
reader has $COLUMNS columns), and in a real terminal, a tmux pane of that width, read back with
`capture-pane -p`. Regenerate after a deliberate change with
TCSESSION_UPDATE_GOLDEN=1 .venv/bin/pytest tests/test_output.py (then review `git diff`).
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

import outputs
from tcsession import view

GOLDEN = Path(__file__).parent / "golden" / "output"
WIDTHS = (80, 120)


def _golden(name: str, got: str) -> None:
    path = GOLDEN / name
    if os.environ.get("TCSESSION_UPDATE_GOLDEN"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(got)
    assert path.is_file(), f"{path}: no golden file; run with TCSESSION_UPDATE_GOLDEN=1 and review it"
    assert got == path.read_text(), f"{name} differs from its golden file (TCSESSION_UPDATE_GOLDEN=1 to review)"


def _fits(text: str, width: int) -> None:
    """No line wider than the width: nothing left for the terminal to cut."""
    too_wide = [line for line in text.splitlines() if len(line) > width]
    assert not too_wide, too_wide


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", outputs.KINDS)
def test_piped_output_matches_its_golden_and_fits(kind, width):
    got = outputs.piped(kind, width)
    _fits(got, width)
    _golden(f"{kind}-{width}.txt", got)


@pytest.fixture(scope="module")
def tmux_panes(tmp_path_factory):
    """Every kind printed in a tmux pane of each width (one pane per width), read back as text."""
    if not shutil.which("tmux"):
        if os.environ.get("CI", "").lower() == "true":  # ./dev.sh setup installs it: CI proves the terminal
            pytest.fail("CI: tmux is not installed (./dev.sh setup installs it)", pytrace=False)
        pytest.skip("tmux is not installed (apt-get install -y tmux)")
    sock = tmp_path_factory.mktemp("tmux") / "sock"
    panes = {}
    env = " ".join(f"-u {v}" for v in ("COLUMNS", "LINES", "TCSESSION_INVENTORY", "NO_COLOR", "FORCE_COLOR"))
    try:
        for width in WIDTHS:
            name = f"out{width}"
            subprocess.run(["tmux", "-S", str(sock), "-f", "/dev/null", "new-session", "-d", "-x", str(width),
                            "-y", "250", "-s", name,
                            f"env {env} {sys.executable} {Path(outputs.__file__)} all; sleep 60"], check=True)
        for width in WIDTHS:
            deadline = time.monotonic() + 30
            while True:
                text = subprocess.run(["tmux", "-S", str(sock), "capture-pane", "-p", "-t", f"out{width}"],
                                      check=True, capture_output=True, text=True).stdout
                if outputs.MARK + "end" in text or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
            panes[width] = _split(text)
    finally:
        subprocess.run(["tmux", "-S", str(sock), "kill-server"], capture_output=True)
    return panes


def _split(pane: str) -> dict[str, str]:
    """The pane's text, by kind (between the `@@output KIND` lines)."""
    out: dict[str, list[str]] = {}
    kind = None
    for line in pane.splitlines():
        if line.startswith(outputs.MARK):
            kind = line[len(outputs.MARK):].strip()
            out[kind] = []
        elif kind is not None:
            out[kind].append(line.rstrip())
    assert "end" in out, f"the pane never finished:\n{pane}"
    return {k: "\n".join(lines) + "\n" for k, lines in out.items() if k != "end"}


@pytest.mark.parametrize("width", WIDTHS)
@pytest.mark.parametrize("kind", outputs.KINDS)
def test_terminal_output_matches_its_golden_and_fits(tmux_panes, kind, width):
    got = tmux_panes[width][kind]
    _fits(got, width)
    _golden(f"{kind}-{width}.tty.txt", got)


def test_a_terminal_and_a_pipe_of_one_width_read_the_same(tmux_panes):
    """(Trailing spaces aside: tmux does not keep them.)"""
    for width in WIDTHS:
        for kind in outputs.KINDS:
            piped = "\n".join(line.rstrip() for line in outputs.piped(kind, width).splitlines()) + "\n"
            assert tmux_panes[width][kind] == piped, (kind, width)


# --------------------------------------------------------------------------- properties of the text


@pytest.mark.parametrize("width", (40, 60, 80, 100, 120, 200))
def test_no_phrase_is_cut_at_any_width(width):
    """Joined again, the wrapped lines give back every word whole: the issue's msm progress line
    ("changed ...context.xml; " / "restarted tomcat10, serving") and a long log line."""
    what = ("changed /var/lib/tomcat10/webapps/ROOT/META-INF/context.xml, /etc/tomcat10/server.xml; "
            "restarted tomcat10, serving, shop (HTTP 200)")
    lines = [t for t, _ in view.step_lines("tomcat1", what, 12.34, width)]
    assert all(len(line) <= width for line in lines)
    assert lines[0].startswith("  tomcat1    changed ")
    assert all(line.startswith(" " * 13) for line in lines[1:])  # under the text, not under the host
    whole = f"tomcat1 {what} 12.3 s"
    assert "".join("".join(lines).split()) == "".join(whole.split())  # nothing lost, nothing added
    if width - 13 >= max(len(w) for w in what.split()):  # every word fits the room: none is cut
        assert " ".join(" ".join(lines).split()) == whole
    else:  # only a word longer than the room (the path) is folded; every other word stays whole
        long = [w for w in what.split() if len(w) > width - 13]
        tokens = " ".join(lines).split()
        assert all(w in tokens for w in f"tomcat1 {what}".split() if w not in long)
    assert lines[-1].endswith("12.3 s")  # the seconds never alone at a line's start


def test_a_failure_is_shown_once_with_its_log_lines_one_per_line():
    """What the old output printed three times (the event, the error, the hosts' summary) and
    joined with " | ": now one host line, then each log line on its own, then (tcsession's last
    line) only what to do."""
    text = outputs.piped("failure", 120)
    assert text.count("tomcat10 stopped while starting") == 1
    assert " | " not in text
    lines = text.splitlines()
    logs = [i for i, line in enumerate(lines) if line.startswith("      Dec 01")]
    assert len(logs) == len(outputs.BIND_FAILURE)  # each log line starts a line of its own, indented
    block = lines[logs[0]:lines.index("recap:")]
    assert all(line.startswith("      Dec 01") or line.startswith(" " * 8) for line in block)
    last = lines.index(next(line for line in lines if line.startswith("tcsession: ")))
    assert lines[last].startswith("tcsession: deploy 20261201T100000Z-abcdef stopped; run the deploy again")
    assert last > lines.index("recap:") and all(line.startswith("  ") for line in lines[last + 1:])
    assert "`tcsession -i lab.toml rollback`" in text and "`tcsession -i lab.toml deploy --mode=delta`" in text


def test_the_message_of_a_stopped_deploy_still_says_it_all_for_scripts_and_quiet_runs():
    """--json and --quiet have no progress: the error itself carries the failure, its log lines one
    per line, where each host stands and what to do (no brief: the progress did not show them)."""
    from tcsession import ui

    quiet = ui.Progress(quiet=True, console=_console(80))
    line = outputs.failure(quiet)
    assert quiet.console.file.getvalue() == ""
    lines = line.removeprefix("tcsession: ").splitlines()
    assert lines[0].startswith("deploy 20261201T100000Z-abcdef stopped: tomcat1: restart tomcat10")
    assert lines[1] == "last log lines:" and lines[2:6] == outputs.BIND_FAILURE
    assert lines[6] == "hosts: nginx: nothing to change; tomcat1: failed; tomcat2: in progress"
    assert lines[7].endswith("or `tcsession -i lab.toml rollback` to undo it")


@pytest.mark.parametrize("width", (*WIDTHS, None))
@pytest.mark.parametrize("kind", ("deploy", "failure"))
def test_a_progress_into_a_pipe_prints_what_rich_prints_there(kind, width, monkeypatch):
    """Off a terminal a Progress prints through ui.Pipe, without rich: the same text, line for line,
    as rich's Console into that pipe (the goldens), at a reader's $COLUMNS and with none set."""
    from tcsession import ui

    monkeypatch.delenv("COLUMNS", raising=False)
    out = io.StringIO()
    outputs.render(kind, ui.Pipe(out), width)
    assert out.getvalue() == outputs.piped(kind, width)
    assert out.getvalue().count("\n") > 5


def test_a_pipe_whose_reader_left_is_written_no_more_and_the_run_goes_on():
    """`tcsession deploy | head -1`: once the reader is gone, a line raises nothing (a deploy must
    not stop between two restarts for its output), and later lines go nowhere."""
    from tcsession import ui

    r, w = os.pipe()
    os.close(r)
    out = os.fdopen(w, "w")
    pipe = ui.Pipe(out)
    pipe.line("first")  # EPIPE: the reader is gone
    pipe.line("second")
    out.flush()  # as Python's last flush at exit: the descriptor is /dev/null now
    assert os.path.samestat(os.fstat(out.fileno()), os.stat(os.devnull))
    out.close()


def test_a_progress_prints_through_a_pipe_unless_on_a_terminal_or_forced(monkeypatch):
    from tcsession import ui

    for var in ("FORCE_COLOR", "TTY_COMPATIBLE", "TTY_INTERACTIVE"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setattr(sys, "stdout", io.StringIO())
    assert isinstance(ui.progress_console(), ui.Pipe)
    monkeypatch.setenv("FORCE_COLOR", "1")  # rich's to honour: colours into the pipe
    assert not isinstance(ui.progress_console(), ui.Pipe)


def test_a_quiet_run_never_makes_a_console():
    """--quiet prints nothing: its Progress never makes the rich Console (loading rich is 25 ms of
    CPU that the connections opening meanwhile waited for); a run that prints makes it once."""
    from tcsession import ui

    quiet = ui.Progress(quiet=True)
    outputs.failure(quiet)
    assert quiet._console is None
    shown = ui.Progress()
    assert shown._console is None
    shown.say("hello")
    assert shown._console is not None and shown.console is shown._console


def test_history_shows_every_deploy_id_whole_at_any_width():
    hist, notes = outputs.history_data()
    ids = {r.id for recs in hist.values() for r in recs}
    for width in (40, 80):
        lines = [t for t, _ in view.history_lines(hist, notes, width)]
        assert {line.split()[0] for line in lines if line[:1].isdigit()} == ids


def test_the_recap_names_every_host_with_its_result():
    rows = {r.host: r for r in _recap_of("failure")}
    assert (rows["nginx"].result, rows["tomcat1"].result, rows["tomcat2"].result) == ("not reached", "failed",
                                                                                     "changed")
    rows = {r.host: r for r in _recap_of("deploy")}
    assert {h: r.result for h, r in rows.items()} == {"nginx": "ok", "tomcat1": "changed", "tomcat2": "changed"}
    assert rows["tomcat1"].seconds == pytest.approx(0.1 + 10.2 + 0.1)


def _recap_of(kind: str):
    got = []

    class Keep(outputs.ui.Progress):
        def recap(self, rows):
            got.extend(rows)

    getattr(outputs, kind)(Keep(console=_console(80)))
    return got


def test_a_dry_run_is_framed_with_what_it_showed():
    inv = outputs.inventory()
    plan = outputs.planning.plan(inv, outputs._facts("deployed"), "delta", deploy_id=outputs.DEPLOY_ID, time="t")
    assert view.dry_run_line(list(plan.steps), 80) == [
        ("dry run: nothing was changed: 7 steps on 3 hosts", "bold")]


def test_the_spinner_runs_only_on_a_terminal():
    from tcsession import ui
    from tcsession.apply import Event

    inv = outputs.inventory()
    step = outputs.planning.plan(inv, outputs._facts("deployed"), "delta", deploy_id=outputs.DEPLOY_ID,
                                 time="t").steps[2]
    piped = ui.Progress(console=_console(80))
    piped.event(Event("started", step))
    assert piped._waiting is None
    tty = ui.Progress(console=_console(80, terminal=True))
    tty.event(Event("started", step))
    try:
        shown = tty._waiting._render().text.plain
        assert shown.startswith("   0 s  tomcat1: restart tomcat10") and len(shown) <= 80 - 4
    finally:
        tty.event(Event("done", step, "restarted tomcat10, serving", 7.8))
    assert tty._waiting is None and "restarted tomcat10, serving  7.8 s" in tty.console.file.getvalue()


def _console(width: int, terminal: bool = False):
    from rich.console import Console

    return Console(file=io.StringIO(), width=width, force_terminal=terminal, highlight=False,
                   color_system=None if not terminal else "standard")


def test_tcsession_ends_a_stopped_run_with_what_to_do_only(capsys):
    """tcsession.tasks: an error whose progress showed the failure (`brief`) ends the command
    with that one wrapped sentence on stderr and the error's exit code; any other, with its message."""
    from invoke import Exit

    from tcsession.errors import TcsessionError
    from tcsession.tasks import _fail_cleanly

    def stopped_run():
        e = TcsessionError("deploy X stopped: tomcat1: restart tomcat10 failed\nlast log lines:\nSEVERE: a\nhosts: ...")
        e.brief = "deploy X stopped; run the deploy again to converge, or `tcsession -i lab.toml rollback` to undo it"
        raise e

    with pytest.raises(Exit) as e:
        _fail_cleanly(stopped_run)()
    assert e.value.code == 1 and not e.value.message
    err = capsys.readouterr().err
    assert err.startswith("tcsession: deploy X stopped; run the deploy again") and "SEVERE" not in err
    assert "`tcsession -i lab.toml rollback`" in " ".join(err.split())


def test_into_a_pipe_without_columns_each_line_is_whole(monkeypatch):
    """A pipe has no width: with no $COLUMNS, nothing is wrapped (one line per check, for grep);
    with $COLUMNS, lines are fitted to it."""
    monkeypatch.delenv("COLUMNS", raising=False)
    text = outputs.piped("status", None)
    assert "the check's session 36F7C332B031851572AF7DFCFE0D6634-n2.tomcat1 lives on memcached node n2\n" in text
    assert max(len(line) for line in text.splitlines()) > 120
    monkeypatch.setenv("COLUMNS", "80")
    assert outputs.piped("status", None) == outputs.piped("status", 80)


# --------------------------------------------------------------------------- the picture of the cluster


def test_the_msm_picture_says_which_memcached_keeps_whose_sessions():
    """Sticky msm (captured): each Tomcat keeps its sessions in the other host's memcached and
    falls back to its own (memcachedNodes less failoverNodes, as its context.xml says)."""
    from tcsession.graph import topology_text

    text = topology_text(outputs.msm_report(), 80)
    assert "tomcat1 10.153.0.112 tomcat10 active" in text
    assert "sessions -> memcached n2 (tomcat2); failover n1 (tomcat1)" in text
    assert "sessions -> memcached n1 (tomcat1); failover n2 (tomcat2)" in text
    n2 = text[text.index("n2 10.153.0.113:11211 on tomcat2"):]
    assert n2.splitlines()[0].endswith("1 items (holds the check's session)")
    assert "sessions of tomcat1" in n2 and "failover for tomcat2" in n2


def test_the_delta_picture_says_who_sees_whom_and_who_is_missing():
    import dataclasses

    from tcsession.graph import topology_text

    r = outputs.delta_report()
    assert "tomcat1 10.153.0.112 tomcat10 active, ok\n    │   └── sees as members: tomcat2" in topology_text(r, 80)
    alone = dataclasses.replace(r.hosts[1], members=())
    down = dataclasses.replace(r.hosts[2], reachable=False, error="tomcat2 (10.153.0.113:22): timed out",
                               facts=None, checks=())
    text = topology_text(dataclasses.replace(r, hosts=(r.hosts[0], alone, down)), 80)
    assert "sees as members: nobody; does not see: tomcat2" in text
    assert "tomcat2 10.153.0.113 unreachable" in text and "UNHEALTHY" in text


@pytest.mark.parametrize("width", (60, 80))
def test_the_picture_fits_narrow_terminals(width):
    from tcsession.graph import topology_text

    for report in (outputs.msm_report(), outputs.delta_report()):
        _fits(topology_text(report, width), width)


def test_status_takes_graph(capsys):
    from tcsession.cli import program

    program().run(["tcsession", "status", "--help"], exit=False)
    assert "--graph" in capsys.readouterr().out


def test_long_waits_show_a_spinner_only_on_a_terminal():
    from tcsession import ui

    piped = _console(80)
    with ui.waiting("status of 3 hosts", piped):
        pass
    assert piped.file.getvalue() == ""
    tty = _console(80, terminal=True)
    with ui.waiting("status of 3 hosts", tty) as _:
        pass
    assert "status of 3 hosts" in tty.file.getvalue()  # drawn, then erased (transient)
    assert ui.status_console(as_json=True).is_terminal is False  # --json: never on stdout's terminal


def test_an_error_on_a_terminal_is_wrapped_line_by_line():
    from tcsession import ui

    tty = _console(40, terminal=True)
    ui.print_stopped("tcsession: lab.toml: invalid TOML at line 54, column 25: Cannot overwrite a value\n"
                     "tcsession: second problem", tty, 40)
    import re

    lines = re.sub(r"\x1b\[[0-9;]*m", "", tty.file.getvalue()).splitlines()
    assert lines == ["tcsession: lab.toml: invalid TOML at", "  line 54, column 25: Cannot overwrite a",
                     "  value", "tcsession: second problem"]


def test_the_spinner_of_status_starts_only_once_the_session_is_open(monkeypatch):
    """The session asks the sudo password (getpass) when it opens: a spinner redrawn over that
    prompt would hide it. TEST DOUBLES for the session and the reading record the order."""
    import contextlib

    from tcsession import status

    order = []

    @contextlib.contextmanager
    def session_double(inv, quiet=False, ui=None):
        order.append("session open (any prompt answered)")
        yield "session"

    @contextlib.contextmanager
    def busy():
        order.append("spinner")
        yield
        order.append("spinner gone")

    monkeypatch.setattr(status, "open_session", session_double)
    monkeypatch.setattr(status, "run_status", lambda world, n: order.append(f"reading with {world}") or "report")
    assert status.cluster_report(outputs.inventory(), 3, busy=busy) == "report"
    assert order == ["session open (any prompt answered)", "spinner", "reading with session", "spinner gone"]


def test_a_suggested_command_carries_the_inventory_unless_it_would_be_found_anyway(tmp_path):
    from tcsession.workdir import command

    assert command("lab.toml", "rollback", environ={}, cwd=tmp_path) == "tcsession -i lab.toml rollback"
    assert command(tmp_path / "hosts.toml", "rollback", environ={}, cwd=tmp_path) == "tcsession rollback"
    assert command("hosts.toml", "history", environ={}, cwd=tmp_path) == "tcsession history"
    # ./hosts.toml given while $TCSESSION_INVENTORY names another: without -i the other would be read
    assert command("hosts.toml", "history", environ={"TCSESSION_INVENTORY": "prod.toml"},
                   cwd=tmp_path) == "tcsession -i hosts.toml history"
    assert command("my servers/prod.toml", "deploy --mode=msm", environ={}, cwd=tmp_path) == (
        "tcsession -i 'my servers/prod.toml' deploy --mode=msm")
    assert command(None, "history", environ={}, cwd=tmp_path) == "tcsession history"


def test_an_interrupt_no_step_reported_is_said_in_the_last_line():
    """Ctrl-C during tomcat1's restart: no step failed, so the progress showed no failure; the
    last line says the interrupt and what to do, the recap says `interrupted`."""
    from tcsession.apply import Outcome
    from tcsession.deploy import _advice, stopped
    from tcsession.errors import Interrupted
    from tcsession import ui

    progress = ui.Progress(console=_console(80))
    restart = outputs.planning.plan(outputs.inventory(), outputs._facts("deployed"), "delta",
                                    deploy_id=outputs.DEPLOY_ID, time="t").steps[2]
    outcome = Outcome({"nginx": "nothing to change", "tomcat1": "interrupted during: restart tomcat10",
                       "tomcat2": "done"}, failed=restart, interrupted=True,
                      error="interrupted during tomcat1: restart tomcat10; the step under way may have finished")
    inv = outputs.inventory(outputs.LAB)
    e = stopped("deploy", outcome, "X", [], _advice(inv, outcome, [], "delta"), progress)
    assert isinstance(e, Interrupted) and e.code == 130
    assert e.brief.startswith("deploy X stopped: interrupted during tomcat1: restart tomcat10; the step under way")
    assert e.brief.endswith("`tcsession -i lab.toml rollback` to undo it")
    rows = outputs.view.recap(["tomcat1"], [], [], outcome.hosts, {})
    assert rows[0].result == "interrupted"

"""The commands' own logic in a Session built by hand: the strict TEST DOUBLE of fakeremote.py for
SSH (any command it was not told to expect fails the test), a recording UI, a fixed clock and
fixed ids. It proves what the commands send and decide, in milliseconds; the lab tests prove what
hosts then do."""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from fakeremote import Expect, FakeRemote
from tcsession.deploy import run_deploy
from tcsession.errors import TcsessionError
from tcsession.facts import parse_facts
from tcsession.inventory import load_inventory
from tcsession.rollback import run_rollback
from tcsession.session import Session
from tcsession.steps import manifest_for

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "facts"
HOSTS = ("nginx", "tomcat1", "tomcat2")


class RecordingUI:
    """Everything a command shows, as (kind, text) in order."""

    def __init__(self):
        self.shown: list[tuple[str, str]] = []

    def line(self, host, what, seconds=None, style=""):
        self.shown.append(("line", f"{host}  {what}"))

    def say(self, text, style=""):
        self.shown.append(("say", text))

    def event(self, e):
        self.shown.append((e.kind, f"{e.step.host}  {e.text}"))

    def diff(self, diff):
        self.shown.append(("diff", diff))

    def plan(self, plan, diffs, hosts=None):
        self.shown += [("plan", line) for line in plan.lines()] or [("plan", f"{h}  up to date") for h in hosts or ()]

    def waiting(self, what):
        import contextlib

        self.shown.append(("wait", what))
        return contextlib.nullcontext()

    def recap(self, rows):
        self.shown += [("recap", f"{r.host}  {r.result} {r.steps} {r.changes}") for r in rows]

    def dry_run(self, steps):
        self.shown.append(("dry run", f"{len(steps)} steps"))


def session(fake, inv=None) -> Session:
    ticks = iter(range(1000))
    return Session(inv or load_inventory(ROOT / "hosts.toml"), fake, RecordingUI(), clock=lambda: float(next(ticks)),
                   stamp=lambda: "2026-12-01T10:00:00Z", new_id=lambda: "20261201T100000Z-abcdef")


def facts_answers(prefix: str = "deployed") -> list[Expect]:
    """Each host's answer to deploy's facts round trip, as captured on a lab host."""
    return [Expect(h, "os-release", (DATA / f"{prefix}-{h}.txt").read_text() + "@@end\n") for h in HOSTS]


def test_a_deploy_with_nothing_to_change_reads_each_host_once_and_changes_nothing():
    assert "os-release" in __import__("tcsession.facts", fromlist=["x"]).deploy_script()
    fake = FakeRemote(facts_answers())
    s = session(fake)
    report = run_deploy(s, "delta")
    fake.assert_done()
    assert not report.changed and report.deploy_id is None and report.executed == []
    assert fake.commands == 3  # no preflight round trips, no change: one read per host
    assert s.ui.shown[-1] == ("say", "no changes")
    assert ("plan", "tomcat1  up to date") in s.ui.shown
    from tcsession.contract import deploy_json

    d = deploy_json(report)
    assert (d["schema"], d["ok"], d["exit"], d["mode"], d["deploy_id"], d["changed"], d["steps"]) == (
        "tcsession.deploy/1", True, 0, "delta", None, False, [])


def test_a_dry_run_of_a_mode_switch_sends_only_reads_before_its_checks():
    """The msm stand-in cluster planned back to delta, stopped by a strict fake at preflight's
    first probe: nothing past the facts and the checks is ever sent (a dry run changes nothing)."""
    fake = FakeRemote(facts_answers("msm-sticky") + [Expect("nginx", "never", "")])
    with pytest.raises(AssertionError, match="unexpected command"):
        run_deploy(session(fake), "delta", dry_run=True)
    sent = [body for _, body in fake.log]
    assert len(sent) == 3 and not any("base64 -d" in b or "systemctl restart" in b for b in sent)


def history_answer(deploy_id: str, host: str, rolled_back: bool = False) -> str:
    m = manifest_for(deploy_id, "delta", "t", (), (), {"tomcat10": "active"})
    data = base64.b64encode(m.to_json() if isinstance(m.to_json(), bytes) else m.to_json().encode()).decode()
    return f"@@deploy {deploy_id} {'rolled-back' if rolled_back else 'applied'}\n{data}\n@@dirs {deploy_id}\n"


def test_a_rollback_with_nothing_recorded_reads_the_history_only():
    fake = FakeRemote([Expect(h, "@@deploy", "") for h in HOSTS])
    with pytest.raises(TcsessionError, match="nothing to roll back"):
        run_rollback(session(fake))
    fake.assert_done()
    assert fake.commands == 3


def test_rollback_to_an_unknown_id_is_refused_after_reading_the_history_only():
    fake = FakeRemote([Expect(h, "@@deploy", history_answer("20261130T090000Z-aaaaaa", h)) for h in HOSTS])
    with pytest.raises(TcsessionError, match=r"--to 20261129T000000Z-bbbbbb: no such deploy"):
        run_rollback(session(fake), to="20261129T000000Z-bbbbbb")
    fake.assert_done()


def test_rollback_to_the_latest_id_says_there_is_nothing_to_do():
    fake = FakeRemote([Expect(h, "@@deploy", history_answer("20261130T090000Z-aaaaaa", h)) for h in HOSTS])
    s = session(fake)
    assert run_rollback(s, to="20261130T090000Z-aaaaaa") == []
    fake.assert_done()
    assert s.ui.shown == [("say", "already at 20261130T090000Z-aaaaaa: nothing to roll back")]


def test_the_captured_facts_parse_as_deployed_hosts():
    """(The doubles above answer with these captures: they must be what they say.)"""
    f = parse_facts((DATA / "deployed-tomcat1.txt").read_text())
    assert f.tomcat is not None and f.active.get("tomcat10") == "active"


def test_a_facts_answer_cut_short_is_an_error_naming_the_host_never_facts():
    """(#19.7) A login banner or a dropped connection with exit 0: the answer lacks its end marker.
    Read as facts it would plan "server.xml missing; reinstall tomcat10"."""
    answers = facts_answers()
    text = answers[1].output
    answers[1] = Expect("tomcat1", "os-release", text[:text.index("@@packages")])  # cut, exit 0
    fake = FakeRemote(answers)
    with pytest.raises(TcsessionError, match=r"^tomcat1: incomplete answer to tcsession's facts .*nothing changed"):
        run_deploy(session(fake), "delta")
    fake.assert_done()
    assert fake.commands == 3  # the reads, nothing after them


class ScriptedHosts:
    """A TEST DOUBLE for SSH that answers by what a command asks (facts, clocks, installs) and
    records every command: for the flows whose length depends on the answers (an install that
    changes nothing, asked again). It proves what tcsession sends and concludes, nothing about hosts."""

    def __init__(self, answer):
        self.answer = answer  # (host name, command) -> (exit code, stdout)
        self.log: list[tuple[str, str]] = []
        self.commands = 0

    def run(self, host, command, stdin=None, timeout=None):
        from tcsession.remote import Result

        self.commands += 1
        self.log.append((host.name, command))
        code, out = self.answer(host.name, command)
        return Result(host.name, command, code, out)

    def run_all(self, hosts, command, stdin=None):
        return {h.name: self.run(h, command(h) if callable(command) else command) for h in hosts}


def test_an_install_that_leaves_the_package_missing_never_reports_success():
    """(#19.2) The package manager exits 0 but the package is still missing: the deploy installs
    again, and then stops with an error instead of printing "deployed" with no file written."""
    import time as _time
    from tcsession.inventory import parse_inventory

    inv = parse_inventory((ROOT / "hosts.toml").read_text().partition("[delta]")[0]
                          + '[delta]\nmembership = "static"\n', ROOT / "hosts.toml")
    fresh = (Path(__file__).parent / "data" / "preflight" / "fresh-tomcat1.txt").read_text() + "@@end\n"

    def answer(host, command):
        if "os-release" in command:
            return 0, fresh.replace("\ntomcat1\n", f"\n{host}\n", 1)
        if command.strip() == "date +%s.%N":
            return 0, f"{_time.time():.6f}\n"
        if "apt-get install" in command:
            return 0, ""  # "success", and nothing installed
        raise AssertionError(f"unexpected command on {host}: {command[:200]!r}")

    hosts = ScriptedHosts(answer)
    s = session(hosts, inv)
    with pytest.raises(TcsessionError, match=r"the package manager reported success but the packages are still "
                                             r"missing \(nginx: nginx, tomcat1: tomcat10"):
        run_deploy(s, "delta")
    installs = [c for _, c in hosts.log if "apt-get install" in c]
    assert len(installs) == 6  # three hosts, twice
    assert not any("systemctl restart" in c or "base64 -d" in c for _, c in hosts.log)  # no file, no restart
    assert not any(text.startswith("deployed") for _, text in s.ui.shown)


def test_encrypt_in_msm_mode_is_said_not_silently_ignored(tmp_path):
    """(#19.9) [delta] encrypt = true with --mode=msm: a note before anything else is done (here the
    jars are then not found in an empty repository: nothing past the facts is sent)."""
    from tcsession.inventory import parse_inventory

    (tmp_path / "empty").mkdir()
    text = (ROOT / "hosts.toml").read_text().replace("state_transfer_timeout = 60 ", "encrypt = true\nstate_transfer_timeout = 60 ")
    text = text.replace('maven_repo = "https://repo.maven.apache.org/maven2"', f'maven_repo = "{tmp_path / "empty"}"')
    inv = parse_inventory(text, tmp_path / "hosts.toml")
    assert inv.delta.encrypt and inv.msm.maven_repo == str(tmp_path / "empty")
    fake = FakeRemote(facts_answers("msm-sticky"))
    s = session(fake, inv)
    with pytest.raises(TcsessionError, match="maven_repo"):
        run_deploy(s, "msm")
    fake.assert_done()
    notes = [t for k, t in s.ui.shown if k == "say" and "encrypt" in t]
    assert notes == [f"  note: {tmp_path / 'hosts.toml'}: [delta] encrypt = true applies to delta mode only; msm mode "
                     "sends sessions to memcached unencrypted (keep memcached on a private network)"]


def test_a_dry_run_of_several_rollbacks_plans_the_first_in_full_and_lists_the_rest():
    """rollback --to Z --dry-run with B and A after Z: B's plan shown exactly as it would run (the
    files read, the hosts' facts), A listed as planned once B ran; nothing changing is sent."""
    from tcsession import state
    from tcsession.facts import parse_facts
    from tcsession.steps import FileChange

    server = "/etc/tomcat10/server.xml"
    deployed = (DATA / "deployed-tomcat1.txt").read_text()
    now = parse_facts(deployed).content(server)
    older = now + b"<!-- before B -->\n"

    def answer(deploy_id: str, before: bytes, after: bytes) -> str:
        change = FileChange(server, before, after, "640", "root:tomcat", "640", "root:tomcat")
        m = manifest_for(deploy_id, "delta", "t", (change,), (), {"tomcat10": "active"})
        data = m.to_json() if isinstance(m.to_json(), bytes) else m.to_json().encode()
        return f"@@deploy {deploy_id} applied\n{base64.b64encode(data).decode()}\n@@dirs {deploy_id}\n"

    z, a, b = "20261129T000000Z-0000ff", "20261130T090000Z-aaaaaa", "20261201T100000Z-bbbbbb"
    history = answer(z, b"z0", b"z1") + answer(a, b"a0", older) + answer(b, older, now)
    current = (f"@@file {server} 640 root:tomcat\n{base64.b64encode(now).decode()}\n"
               f"@@file {state.deploy_dir(b)}/files/0 600 root:root\n{base64.b64encode(older).decode()}\n")
    fake = FakeRemote([Expect("nginx", "@@deploy", ""), Expect("tomcat1", "@@deploy", history),
                       Expect("tomcat2", "@@deploy", ""), Expect("tomcat1", f"{state.deploy_dir(b)}/files/0", current),
                       *facts_answers()])
    s = session(fake)
    plans = []
    assert run_rollback(s, to=z, dry_run=True, plans=plans) == [b, a]
    fake.assert_done()
    (plan, executed), = plans
    assert executed == [] and plan.kind == f"rollback {b}"
    assert plan.lines()[0] == f"tomcat1  undo {b}: restore {server}"
    assert [t for k, t in s.ui.shown if k == "plan"] == plan.lines()
    framed = [k for k, _ in s.ui.shown if k in ("say", "plan", "dry run")]
    assert framed[0] == "say" and s.ui.shown[0][1].startswith(f"dry run: the steps undoing {b} would take")
    assert ("dry run", f"{len(plan.steps)} steps") in s.ui.shown  # the frame's end: the steps it showed
    assert s.ui.shown[-1] == ("say", f"then undo {a}: planned once the previous rollback ran (hosts tomcat1; "
                                     "1 recorded file(s))")
    restore = plan.steps[0]
    assert restore.changes[0].after == older  # B's saved bytes, checked against its manifest
    assert any(type(st).__name__ == "CheckPorts" for st in plan.steps)  # a rollback ends with its checks


# --------------------------------------------------------------------------- the mode in the inventory


def inventory_with_mode(tmp_path, mode: str):
    path = tmp_path / "hosts.toml"
    path.write_text((ROOT / "hosts.toml").read_text() + f'\n[cluster]\nmode = "{mode}"\n')
    return load_inventory(path)


def test_the_mode_comes_from_the_inventory_and_another_is_refused_without_the_switch(tmp_path):
    from tcsession.errors import UsageError
    from tcsession.modes import choose

    inv = inventory_with_mode(tmp_path, "msm")
    assert choose(inv, None).name == "msm" and choose(inv, "msm").name == "msm"
    with pytest.raises(UsageError) as e:
        choose(inv, "delta")
    assert str(e.value) == (
        f'--mode=delta differs from {inv.path}: [cluster] mode = "msm": a deploy in delta mode removes '
        "memcached-session-manager's Manager, the jars tcsession placed and the jvmRoute marker (memcached keeps "
        'running with its listen address); to switch, set [cluster] mode = "delta" (or give --switch-mode with '
        "--mode=delta); to deploy msm, drop --mode")
    assert choose(inv, "delta", switch=True).name == "delta"
    bare = load_inventory(ROOT / "hosts.toml")  # no [cluster] mode: --mode as before
    assert bare.mode is None and choose(bare, "msm").name == "msm"
    with pytest.raises(UsageError, match=r'deploy needs a mode: set \[cluster\] mode = "delta"'):
        choose(bare, None)


def test_a_deploy_of_the_other_mode_than_the_hosts_run_needs_the_switch_and_says_what_it_removes(tmp_path):
    """The Tomcats run msm (captured facts); the inventory now says delta. Without --switch-mode the
    deploy stops after reading the hosts (nothing sent but the reads); with it, its first line says
    what the switch removes."""
    from tcsession.errors import UsageError

    inv = inventory_with_mode(tmp_path, "delta")
    fake = FakeRemote(facts_answers("msm-sticky"))
    with pytest.raises(UsageError) as e:
        run_deploy(session(fake, inv), "delta", dry_run=True)
    assert str(e.value).startswith(f'the Tomcats run msm mode and this deploy is delta ({inv.path}: [cluster] mode = '
                                   '"delta"): it would remove memcached-session-manager\'s Manager')
    assert str(e.value).endswith('to switch, give --switch-mode; to keep msm, set [cluster] mode = "msm" '
                                 "(nothing was changed)")
    fake.assert_done()
    assert fake.commands == 3
    fake = FakeRemote(facts_answers("msm-sticky") + [Expect("nginx", "never", "")])
    s = session(fake, inv)
    with pytest.raises(AssertionError, match="unexpected command"):  # preflight's probes: past the refusal
        run_deploy(s, "delta", dry_run=True, switch=True)
    says = [text for kind, text in s.ui.shown if kind == "say"]
    assert says[0] == ("switching mode msm -> delta: this deploy removes memcached-session-manager's Manager, the "
                       "jars tcsession placed and the jvmRoute marker (memcached keeps running with its listen address)")


def test_a_failed_install_ends_with_a_recap_per_host_and_one_error_that_says_it_all(tmp_path):
    """The package manager fails on tomcat1 (its packages run on every host at once): the
    progress gets one recap row per host, and the error (for --json and --quiet: no progress
    showed it) names the failure once, where each host stands, then what to do with the inventory
    given."""
    import time as _time
    from tcsession.inventory import parse_inventory

    inv = parse_inventory((ROOT / "hosts.toml").read_text().partition("[delta]")[0]
                          + '[delta]\nmembership = "static"\n', tmp_path / "lab.toml")
    fresh = (Path(__file__).parent / "data" / "preflight" / "fresh-tomcat1.txt").read_text() + "@@end\n"

    def answer(host, command):
        if "os-release" in command:
            return 0, fresh.replace("\ntomcat1\n", f"\n{host}\n", 1)
        if command.strip() == "date +%s.%N":
            return 0, f"{_time.time():.6f}\n"
        if "apt-get install" in command:
            if host == "tomcat1":
                return 100, "@@step 0\nE: Unable to locate package tomcat10\n@@failed 0\n"
            return 0, "@@step 0\n"
        raise AssertionError(f"unexpected command on {host}: {command[:200]!r}")

    s = session(ScriptedHosts(answer), inv)
    with pytest.raises(TcsessionError) as e:
        run_deploy(s, "delta")
    recap = [t for k, t in s.ui.shown if k == "recap"]
    assert recap == ["nginx  changed 1 1", "tomcat1  failed 0 0", "tomcat2  changed 1 1"]
    lines = str(e.value).splitlines()
    assert lines[0].startswith("deploy 20261201T100000Z-abcdef stopped: tomcat1: install")
    assert lines[0].endswith("E: Unable to locate package tomcat10")
    assert sum("Unable to locate package" in line for line in lines) == 1  # said once
    assert lines[1] == "hosts: nginx: done; tomcat1: failed; tomcat2: done"
    assert lines[-1] == (f"run the deploy again to converge (`tcsession -i {tmp_path / 'lab.toml'} deploy --mode=delta`), or "
                         f"`tcsession -i {tmp_path / 'lab.toml'} rollback` to undo it")
    assert e.value.brief is None  # a recording UI shows nothing: the whole message is the error


def test_a_switch_of_membership_kind_on_a_running_cluster_needs_its_flag(tmp_path):
    """The Tomcats run a multicast cluster (captured facts); the inventory now says static. Without
    --switch-membership the deploy stops after reading the hosts, one line naming the file, the key,
    the nodes and both ways out; with it, it goes on (to preflight's probes here)."""
    from tcsession.errors import UsageError

    path = tmp_path / "hosts.toml"
    path.write_text((ROOT / "hosts.toml").read_text().replace('membership = "multicast"', 'membership = "static"'))
    inv = load_inventory(path)
    fake = FakeRemote(facts_answers("deployed"))
    with pytest.raises(UsageError) as e:
        run_deploy(session(fake, inv), "delta")
    assert str(e.value).startswith(f'{inv.path}: [delta] membership = "static": switching membership multicast -> '
                                   "static on a running cluster (tomcat1, tomcat2): 3 rolling pass(es), each through "
                                   "the drained restarts, so that every restarted node sees its running peers: pass "
                                   "1/3 bridge-multicast: ")
    assert str(e.value).endswith("to switch, give --switch-membership; to keep the running kind, remove the "
                                 "key (nothing was changed)")
    assert "\n" not in str(e.value)
    fake.assert_done()
    fake = FakeRemote(facts_answers("deployed") + [Expect("nginx", "never", "")])
    with pytest.raises(AssertionError, match="unexpected command"):  # preflight's reads: past the refusal
        run_deploy(session(fake, inv), "delta", dry_run=True, switch_membership=True)


def test_a_dry_run_of_a_membership_switch_says_its_passes_and_shows_the_first(tmp_path, monkeypatch):
    """The running multicast cluster (captured facts), the inventory now static, --switch-membership
    --dry-run: the first pass's steps are shown (each Tomcat's server.xml with the multicast bridge,
    both restarted), then a line naming the two passes after it and what each writes; nothing but
    the facts is sent (preflight stands in: its probes are tested on their own)."""
    from tcsession import preflight
    from tcsession.steps import RestartTomcat, WriteFiles

    monkeypatch.setattr(preflight, "run_checks", lambda *a, **k: preflight.PreflightReport("delta", ()))
    path = tmp_path / "hosts.toml"
    path.write_text((ROOT / "hosts.toml").read_text().replace('membership = "multicast"', 'membership = "static"'))
    fake = FakeRemote(facts_answers("deployed"))
    s = session(fake, load_inventory(path))
    report = run_deploy(s, "delta", dry_run=True, switch_membership=True)
    fake.assert_done()
    assert [st.host for st in report.previewed if isinstance(st, RestartTomcat)] == ["tomcat1", "tomcat2"]
    written = {c.path: c.after for st in report.previewed if isinstance(st, WriteFiles) and st.host == "tomcat1"
               for c in st.changes}
    xml = written["/etc/tomcat10/server.xml"]
    assert b"McastService" in xml and b"StaticMembershipInterceptor" in xml and b"StaticMembershipService" not in xml
    said = [text for kind, text in s.ui.shown if kind == "say"]
    assert any(t.startswith("the steps above are membership pass 1/3 (bridge-multicast); then pass 2/3 "
                            "(bridge-static) writes each Tomcat's Cluster with StaticMembershipService, and a "
                            "StaticMembershipInterceptor") and "pass 3/3 (static) writes each Tomcat's Cluster with "
               "StaticMembershipService alone" in t for t in said), said

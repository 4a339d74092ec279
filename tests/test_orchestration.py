"""The interpreter and the rollback planner, in milliseconds, without root or SSH: plans made by
the real planner from facts captured on deployed lab hosts, applied through the strict TEST
DOUBLE in fakeremote.py (it proves the order and content of what would be sent, nothing about
hosts; the lab tests prove that)."""

from __future__ import annotations

import base64
import dataclasses
from pathlib import Path

import pytest

from fakeremote import Expect, FakeRemote
from tcsession import rollout, state
from tcsession import plan as planning
from tcsession.apply import Interpreter, batch_script, split_output
from tcsession.errors import TcsessionError
from tcsession.facts import FileFact, parse_facts
from tcsession.inventory import load_inventory, parse_inventory
from tcsession.rollback import plan_rollback, restore_changes
from tcsession.steps import (ApplyNginx, CheckPorts, FileChange, RestartTomcat, RestoreFiles, StopService,
                             WriteFiles, manifest_for)

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "facts"
PORTS = {
    "nginx": "LISTEN 0 511 0.0.0.0:80 0.0.0.0:*\n@@udp\n",
    "tomcat1": "LISTEN 0 100 *:8080 *:*\nLISTEN 0 50 [::ffff:10.153.0.112]:4000 *:*\n@@udp\nUNCONN 0 0 228.0.0.4:45564 0.0.0.0:*\n",
    "tomcat2": "LISTEN 0 100 *:8080 *:*\nLISTEN 0 50 [::ffff:10.153.0.113]:4000 *:*\n@@udp\nUNCONN 0 0 228.0.0.4:45564 0.0.0.0:*\n",
}


@pytest.fixture
def inv():
    text = (ROOT / "hosts.toml").read_text().partition("[delta]")[0]
    return parse_inventory(text + "[delta]\nchannel_send_options = 2\n", ROOT / "hosts.toml")


@pytest.fixture
def deployed():
    return {n: parse_facts((DATA / f"deployed-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}


def change_plan(inv, deployed):
    return planning.plan(inv, deployed, "delta", deploy_id="20261201T100000Z-abcdef", time="t")


def interpreter(inv, fake, events=None):
    return Interpreter(fake, {h.name: h for h in inv.hosts}, (events.append if events is not None else None))


def test_a_configuration_change_runs_exactly_its_plan_in_order(inv, deployed):
    p = change_plan(inv, deployed)
    assert [type(s).__name__ for s in p.steps] == ["WriteFiles", "WriteFiles", "RestartTomcat", "RestartTomcat",
                                                    "CheckPorts", "CheckPorts", "CheckPorts"]
    fake = FakeRemote([
        Expect("tomcat1", "/etc/tomcat10/server.xml"), Expect("tomcat2", "/etc/tomcat10/server.xml"),
        Expect("nginx", "systemctl reload nginx"),  # tomcat1 out of service
        Expect("tomcat1", "systemctl restart tomcat10", "state: Manager [localhost#]; session state sent at x received in [9] ms."),
        Expect("nginx", "systemctl reload nginx"),  # tomcat1 back, tomcat2 out: one reload
        Expect("tomcat2", "systemctl restart tomcat10"),
        Expect("nginx", "systemctl reload nginx"),  # tomcat2 back in service
        *[Expect(h, "ss -Hntl", PORTS[h]) for h in ("nginx", "tomcat1", "tomcat2")],
    ])
    events = []
    outcome = interpreter(inv, fake, events).apply(p, [h.name for h in inv.hosts])
    assert outcome.ok, outcome.error
    fake.assert_done()
    assert outcome.done == list(p.steps)  # the run is the plan
    assert outcome.hosts == {"nginx": "nothing to change", "tomcat1": "done", "tomcat2": "done"}
    assert fake.commands == 10  # writes in parallel (2), 2 restarts + 3 nginx reloads, 3 checks
    done = [e.text for e in events if e.kind == "done"]
    assert "restarted tomcat10, serving, session state received" in done


def test_prior_bytes_are_saved_before_any_file_is_written(inv, deployed):
    step = change_plan(inv, deployed).steps[0]
    assert isinstance(step, WriteFiles)
    script = step.script()
    before = deployed["tomcat1"].files["/etc/tomcat10/server.xml"].content
    saved = script.index(f"printf %s {base64.b64encode(before).decode()} | base64 -d > "
                         f"{state.saved_path('20261201T100000Z-abcdef', 0)}")
    assert saved < script.index('mv -f "$tmp"') and script.index("manifest.json") < script.index('mv -f "$tmp"')


def test_restart_waits_for_serving_before_stamping_and_the_next_node(inv, deployed):
    restart = [s for s in change_plan(inv, deployed).steps if isinstance(s, RestartTomcat)]
    assert [s.host for s in restart] == ["tomcat1", "tomcat2"] and all(s.drain for s in restart)
    script = restart[0].script()
    assert script.index("curl") < script.index(state.applied_path("tomcat10"))
    assert b"server 10.153.0.112:8080 max_fails=1 fail_timeout=5s down;" in restart[0].drain.drained
    assert b"down;" not in restart[0].drain.site


def test_the_first_failure_stops_the_run_and_the_node_goes_back_in_service(inv, deployed):
    p = change_plan(inv, deployed)
    fake = FakeRemote([
        Expect("tomcat1", "server.xml"), Expect("tomcat2", "server.xml"),
        Expect("nginx", "systemctl reload nginx"),
        Expect("tomcat1", "systemctl restart tomcat10", "tomcat10 stopped while starting\nlog: SEVERE: the cause", ok=False),
        Expect("nginx", "systemctl reload nginx"),  # back in service, and nothing after it
    ])
    outcome = interpreter(inv, fake).apply(p, [h.name for h in inv.hosts])
    fake.assert_done()
    assert not outcome.ok and outcome.failed is p.steps[2]
    assert outcome.error.startswith("tomcat1: restart tomcat10") and outcome.error.endswith("\nlast log lines:\nSEVERE: the cause")
    assert outcome.hosts["tomcat2"] == "in progress" and outcome.hosts["nginx"] == "nothing to change"
    assert outcome.hosts["tomcat1"].startswith("failed")
    # what the undrain wrote is the site the plan recorded, so a rollback finds what it expects
    assert base64.b64encode(p.steps[2].drain.site).decode() in fake.log[-1][1]


def test_a_host_that_is_not_reached_fails_its_step_and_stops(inv, deployed):
    p = change_plan(inv, deployed)

    class Down(FakeRemote):
        def run(self, host, command, stdin=None, timeout=None):
            if host.name == "tomcat2":
                self.commands += 1
                from tcsession.remote import Result
                return Result(host.name, command, None, error="tomcat2 (10.153.0.113:22): connection timed out")
            return super().run(host, command, stdin, timeout)

    fake = Down([Expect("tomcat1", "server.xml")])
    outcome = interpreter(inv, fake).apply(p, [h.name for h in inv.hosts])
    fake.assert_done()
    assert outcome.failed is p.steps[1] and "timed out" in outcome.error
    assert outcome.hosts["tomcat1"] == "in progress"  # its files written, its restart never started


def test_a_failed_check_reads_the_service_log(inv, deployed):
    checks = rollout.checks(inv, planning.mode_named("delta"), deployed)
    p = dataclasses.replace(change_plan(inv, deployed), steps=tuple(checks))
    fake = FakeRemote([Expect("nginx", "ss -Hntl", PORTS["nginx"]), Expect("tomcat1", "ss -Hntl", "@@udp\n"),
                       Expect("tomcat2", "ss -Hntl", PORTS["tomcat2"]),
                       Expect("tomcat1", "journalctl -u tomcat10", "log: Address already in use")])
    outcome = interpreter(inv, fake).apply(p, [h.name for h in inv.hosts])
    fake.assert_done()
    assert outcome.error == ("tomcat1: nothing listens on tcp 10.153.0.112:8080 (tomcat10)"
                             "\nlast log lines:\nAddress already in use")


def test_batched_steps_of_one_host_are_one_script_split_back_by_step():
    steps = [StopService("t", "was inactive", "memcached"), StopService("t", "was inactive", "tomcat10")]
    script = batch_script(steps)
    assert script.count("@@step") == 2 and "@@failed 1" in script
    assert split_output("@@step 0\na\n@@x\n@@step 1\nb\n", 2) == ["a\n@@x", "b"]


# --------------------------------------------------------------------------- rollback


def applied(deployed, p):
    """The hosts' files as they are once plan `p` was applied, and its records."""
    current, records = {}, {}
    for s in p.steps:
        if isinstance(s, WriteFiles):
            files = {c.path: FileFact(c.path, c.after, c.mode, c.owner) for c in s.changes}
            for r, c in zip(s.manifest.files, s.changes):
                if r.saved:
                    path = f"{state.deploy_dir(s.deploy_id)}/{r.saved}"
                    files[path] = FileFact(path, c.before, "600", "root:root")
            current[s.host] = files
            records[s.host] = state.Record(s.host, s.manifest)
    return current, records


def test_rollback_of_a_change_restores_every_file_and_restarts_like_a_deploy(inv, deployed):
    p = change_plan(inv, deployed)
    current, records = applied(deployed, p)
    rb = plan_rollback(inv, records, current, deployed)
    kinds = [type(s).__name__ for s in rb.steps]
    # ...and ends like a deploy: every port of what runs afterwards checked
    assert kinds == ["RestoreFiles", "RestoreFiles", "RestartTomcat", "RestartTomcat", "CheckPorts", "CheckPorts",
                     "CheckPorts"]
    assert [s.host for s in rb.steps[4:]] == ["nginx", "tomcat1", "tomcat2"]
    for s in rb.steps[:2]:
        (c,) = s.changes
        assert c.path == "/etc/tomcat10/server.xml"
        assert c.after == deployed[s.host].files[c.path].content and (c.mode, c.owner) == ("640", "root:tomcat")
    assert all(s.drain for s in rb.steps[2:4])


def test_rollback_of_a_first_deploy_stops_what_was_not_running(inv, deployed):
    """The bug of the old executor: its preview said restart and the run stopped the Tomcat."""
    p = change_plan(inv, deployed)
    current, records = applied(deployed, p)
    first = {h: dataclasses.replace(r, manifest=dataclasses.replace(r.manifest, services_before=(("tomcat10", "inactive"),)))
             for h, r in records.items()}
    rb = plan_rollback(inv, first, current, deployed)
    stops = [s for s in rb.steps if isinstance(s, StopService)]
    assert [(s.host, s.unit) for s in stops] == [("tomcat1", "tomcat10"), ("tomcat2", "tomcat10")]
    assert not any(isinstance(s, RestartTomcat) for s in rb.steps)
    assert [line.split("  ", 1)[1] for line in rb.lines()][-2] == "stop tomcat10 (it was inactive before 20261201T100000Z-abcdef)"
    # the checks after it: nginx (untouched, running) only; no port of a stopped Tomcat is expected
    assert [(s.host, type(s).__name__, len(s.ports)) for s in rb.steps[-1:]] == [("nginx", "CheckPorts", 1)]


def test_rollback_restores_created_changed_and_linked_files_and_refuses_edits():
    made = FileChange("/etc/new.conf", None, b"new", "644", "root:root")
    changed = FileChange("/etc/old.conf", b"old", b"new", "644", "root:root", "600", "root:adm")
    unlinked = FileChange("/etc/nginx/sites-enabled/default", None, None, "", "", before_link="/etc/nginx/sites-available/default")
    m = manifest_for("20261201T100000Z-abcdef", "delta", "t", (made, changed, unlinked))
    rec = state.Record("nginx", m)
    ddir = state.deploy_dir(m.id)
    now = {"/etc/new.conf": FileFact("/etc/new.conf", b"new", "644", "root:root"),
           "/etc/old.conf": FileFact("/etc/old.conf", b"new", "644", "root:root"),
           f"{ddir}/files/1": FileFact(f"{ddir}/files/1", b"old", "600", "root:root")}
    changes, conflicts = restore_changes(rec, now)
    assert conflicts == ()
    by = {c.path: c for c in changes}
    assert by["/etc/new.conf"].after is None
    assert (by["/etc/old.conf"].after, by["/etc/old.conf"].mode, by["/etc/old.conf"].owner) == (b"old", "600", "root:adm")
    assert by["/etc/nginx/sites-enabled/default"].after_link == "/etc/nginx/sites-available/default"
    script = RestoreFiles("nginx", "test", m.id, changes).script()
    assert "ln -s /etc/nginx/sites-available/default /etc/nginx/sites-enabled/default" in script
    assert script.rstrip().endswith(f"date -u +%FT%TZ > {ddir}/rolled-back")
    edited = {**now, "/etc/old.conf": FileFact("/etc/old.conf", b"edited", "644", "root:root")}
    assert restore_changes(rec, edited)[1] == ("/etc/old.conf",)
    tampered = {**now, f"{ddir}/files/1": FileFact(f"{ddir}/files/1", b"other", "600", "root:root")}
    with pytest.raises(TcsessionError, match="does not match its checksum"):
        restore_changes(rec, tampered)


def test_rollback_refuses_edited_files_unless_forced(inv, deployed):
    p = change_plan(inv, deployed)
    current, records = applied(deployed, p)
    path = "/etc/tomcat10/server.xml"
    current["tomcat1"][path] = FileFact(path, b"<Server/> <!-- edited -->", "640", "root:tomcat")
    with pytest.raises(TcsessionError, match=r"tomcat1:/etc/tomcat10/server.xml.*--force"):
        plan_rollback(inv, records, current, deployed)
    forced = plan_rollback(inv, records, current, deployed, force=True)
    assert forced.steps[0].conflicts == (path,) and "kept beside the record" in forced.steps[0].describe()


# --------------------------------------------------------------------------- state


def test_manifest_round_trip_and_history_parsing():
    m = manifest_for("20261201T100000Z-abcdef", "msm", "2026-12-01T10:00:00Z",
                     (FileChange("/a", b"1", b"2", "644", "root:root", "600", "u:g"),), ("tomcat10",),
                     {"tomcat10": "inactive", "nginx": "active"})
    assert state.Manifest.from_json(m.to_json()) == m and m.was_active("nginx") and not m.was_active("tomcat10")
    good = base64.b64encode(m.to_json().encode()).decode()
    text = (f"@@deploy {m.id} applied\n{good}\n@@dirs {m.id}\n/var/lib/x\n"
            "@@deploy my deploy applied\nAAAA\n"
            f"@@deploy 20261201T100001Z-000000 rolled-back\nbm90IGpzb24=\n@@dirs 20261201T100001Z-000000\n")
    records, notes = state.parse_history(text, "tomcat1")
    assert [(r.id, r.created_dirs, r.rolled_back) for r in records] == [(m.id, ("/var/lib/x",), False)]
    assert len(notes) == 2 and "'my deploy applied'" in notes[0] and "no complete manifest" in notes[1]


def test_a_deploy_that_installs_records_the_install_first_and_replans():
    inv = load_inventory(ROOT / "hosts.toml")
    fresh = parse_facts((DATA / "bookworm-fresh-tomcat1.txt").read_text())
    p = planning.plan(inv, {h.name: fresh for h in inv.hosts}, "delta", deploy_id="20261201T100000Z-abcdef")
    assert [type(s).__name__ for s in p.steps] == ["InstallPackages"] * 3 + ["Replan"]
    script = p.steps[1].script()
    assert script.index("manifest.json") < script.index("apt-get install")
    assert "/tmp/" not in script  # its log is a root-only temporary file in the state directory

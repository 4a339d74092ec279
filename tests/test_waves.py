"""Rolling restarts in waves (issue 12): wave sizes from the mode and `[rolling] max_unavailable`,
the nginx drain of several nodes, the interpreter applying an 8-node plan wave by wave through the
strict TEST DOUBLE in fakeremote.py, and rollback using the same waves. Plans come from the real
planner fed with facts captured on deployed lab hosts (tomcat2's stand in for tomcat3..8)."""

from __future__ import annotations

from pathlib import Path

import pytest

from fakeremote import Expect, FakeRemote
import dataclasses

from tcsession import lab, nginx, rollout, state
from tcsession import plan as planning
from tcsession.apply import Interpreter
from tcsession.errors import TcsessionError
from tcsession.facts import FileFact, parse_facts
from tcsession.inventory import parse_inventory
from tcsession.modes import DELTA, MSM
from tcsession.rollback import plan_rollback
from tcsession.steps import RestartTomcat, WriteFiles
from test_orchestration import applied

DATA = Path(__file__).parent / "data" / "facts"
GOLDEN = Path(__file__).parent / "golden" / "nginx"


def inventory(tomcats: int, extra: str = "", subnet: str = "10.153.0.0/24"):
    text = lab.render_inventory("tcswunit", "bookworm", tomcats, subnet) + "\n" + extra
    return parse_inventory(text, Path("/nonexistent/hosts.toml"))


def names(n: int) -> list[str]:
    return [f"tomcat{i}" for i in range(1, n + 1)]


def waves(inv, mode, running=None):
    all_ = [t.name for t in inv.tomcats]
    return [list(w) for w in rollout.waves(inv, mode, all_, set(all_ if running is None else running))]


@pytest.mark.parametrize("n, extra, mode, sizes", [
    (2, "", DELTA, [1, 1]),  # half of two is one: never both
    (3, "", DELTA, [1, 1, 1]),
    (4, "", DELTA, [2, 2]),
    (8, "", DELTA, [4, 4]),  # DeltaManager: half at once, the other half serves
    (9, "", DELTA, [4, 4, 1]),
    (8, '[delta]\nmanager = "backup"\n', DELTA, [1] * 8),  # BackupManager: one at a time
    (8, '[delta]\nmanager = "backup"\n[rolling]\nmax_unavailable = 4\n', DELTA, [1] * 8),  # never more than the mode
    (8, "[rolling]\nmax_unavailable = 1\n", DELTA, [1] * 8),
    (8, "[rolling]\nmax_unavailable = 3\n", DELTA, [3, 3, 2]),
    (8, '[rolling]\nmax_unavailable = "25%"\n', DELTA, [2, 2, 2, 2]),
    (8, '[rolling]\nmax_unavailable = "10%"\n', DELTA, [1] * 8),  # rounded down, at least one
    (8, '[rolling]\nmax_unavailable = "100%"\n', DELTA, [4, 4]),  # the mode's bound still holds
    (2, '[rolling]\nmax_unavailable = 5\n', MSM, [1, 1]),  # never all
    (8, "", MSM, [4, 4]),
])
def test_wave_sizes_follow_the_mode_and_max_unavailable(n, extra, mode, sizes):
    inv = inventory(n, extra)
    got = waves(inv, mode)
    assert [len(w) for w in got] == sizes
    assert [h for w in got for h in w] == names(n)  # every node once, in inventory order


def test_a_cluster_starting_from_nothing_starts_one_node_alone_then_waves():
    inv = inventory(8)
    assert [len(w) for w in waves(inv, DELTA, running=())] == [1, 4, 3]


def test_a_wave_always_leaves_a_running_node_outside_it():
    inv = inventory(4)
    # only tomcat2 runs: a wave of tomcat1+tomcat2 would leave nothing serving
    got = waves(inv, DELTA, running={"tomcat2"})
    assert got[0] == ["tomcat1"] and all(len(w) <= 2 for w in got)
    up = {"tomcat2"}
    for w in got:
        assert up - set(w), w
        up |= set(w)


@pytest.mark.parametrize("value, fragment", [
    (0, "max_unavailable = 0 must be at least 1"),
    ('"0%"', 'max_unavailable = "0%" is neither a count nor a percentage'),
    ('"150%"', "is neither a count nor a percentage"),
    ('"half"', 'write e.g. max_unavailable = 2 or max_unavailable = "25%"'),
    ("true", "max_unavailable = true is a boolean, expected an integer or a string"),
])
def test_bad_max_unavailable_is_one_line_naming_file_table_and_key(value, fragment):
    with pytest.raises(TcsessionError) as e:
        inventory(2, f"[rolling]\nmax_unavailable = {value}\n")
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("/nonexistent/hosts.toml: [rolling] ") and fragment in msg


def test_ssh_max_parallel_is_validated_and_only_in_ssh():
    assert inventory(2).max_parallel == 32
    assert inventory(2, "[ssh]\nmax_parallel = 4\n").max_parallel == 4
    with pytest.raises(TcsessionError, match=r"\[ssh\] max_parallel = 0 must be from 1 to 256"):
        inventory(2, "[ssh]\nmax_parallel = 0\n")
    text = lab.render_inventory("tcswunit", "bookworm", 2).replace(
        "[tomcat.tomcat1]\n", "[tomcat.tomcat1]\nmax_parallel = 3\n")
    with pytest.raises(TcsessionError, match=r'\[tomcat.tomcat1\] unknown key "max_parallel"'):
        parse_inventory(text, Path("/nonexistent/hosts.toml"))


def test_drain_all_marks_every_node_of_a_wave_down_in_one_site():
    site = (GOLDEN / "jvmroute-2.conf").read_text()
    a, b = ("10.153.0.112", "8080"), ("10.153.0.113", "8080")
    one = nginx.drain_all(site, [(a[0], int(a[1]))])
    assert one == nginx.drain(site, a[0], int(a[1]))
    # both of two nodes: every upstream would be left without a server: refused
    with pytest.raises(TcsessionError, match="with no server; restart fewer nodes at once"):
        nginx.drain_all(site, [(a[0], int(a[1])), (b[0], int(b[1]))])


def test_drain_all_of_half_of_eight_nodes():
    inv = inventory(8)
    backends = [nginx.Backend(t.name, t.address, t.http_port, t.jvm_route) for t in inv.tomcats]
    site = nginx.render_site(backends, routing="jvmroute")
    wave = [(t.address, t.http_port) for t in inv.tomcats[:4]]
    drained = nginx.drain_all(site, wave)
    changed = [(x, y) for x, y in zip(site.splitlines(), drained.splitlines()) if x != y]
    assert len(site.splitlines()) == len(drained.splitlines())
    assert changed and all(y == x.split(";")[0] + " down;" + x.split(";", 1)[1] for x, y in changed)
    downs = {line.split()[1] for line in drained.splitlines() if " down;" in line}
    assert downs == {f"{a}:{p}" for a, p in wave}
    # 9 upstreams (8 per node and the round robin), each listing all 8 nodes: 4 of them down
    assert len(changed) == 9 * 4


# --------------------------------------------------------------------------- 8 nodes through the interpreter


@pytest.fixture
def eight():
    inv = inventory(8, "[delta]\nchannel_send_options = 2\n")
    nginx_facts = parse_facts((DATA / "deployed-nginx.txt").read_text())
    t1 = parse_facts((DATA / "deployed-tomcat1.txt").read_text())
    t2 = parse_facts((DATA / "deployed-tomcat2.txt").read_text())
    facts = {"nginx": nginx_facts, "tomcat1": t1, **{n: t2 for n in names(8)[1:]}}
    return inv, with_deployed_site(inv, facts)  # nginx sends to all 8 (a Tomcat not in it joins)


@pytest.fixture
def eight_after_two():
    """8 Tomcats running, nginx's site as a deploy of 2 left it: a scale-out from 2 to 8."""
    inv = inventory(8, "[delta]\nchannel_send_options = 2\n")
    t2 = parse_facts((DATA / "deployed-tomcat2.txt").read_text())
    return inv, {"nginx": parse_facts((DATA / "deployed-nginx.txt").read_text()),
                 "tomcat1": parse_facts((DATA / "deployed-tomcat1.txt").read_text()), **{n: t2 for n in names(8)[1:]}}


def with_deployed_site(inv, facts):
    """The nginx host as a deploy of `inv` leaves it (its site and the stamp of its reload)."""
    c = planning.nginx_changes(inv, inv.nginx, facts["nginx"], DELTA)
    site = next(x.after for x in c.files if x.path == nginx.SITE)
    f = facts["nginx"]
    stamp = state.applied_path("nginx")
    files = {**f.files, nginx.SITE: FileFact(nginx.SITE, site, "644", "root:root"),
             stamp: FileFact(stamp, c.digest.encode() + b"\n", "644", "root:root")}
    return {**facts, "nginx": dataclasses.replace(f, files=files)}


def ports(inv, host):
    if host == "nginx":
        return "LISTEN 0 511 0.0.0.0:80 0.0.0.0:*\n@@udp\n"
    address = inv.host(host).address
    return (f"LISTEN 0 100 *:8080 *:*\nLISTEN 0 50 [::ffff:{address}]:4000 *:*\n@@udp\n"
            "UNCONN 0 0 228.0.0.4:45564 0.0.0.0:*\n")


STATE = "state: Manager [localhost#]; session state sent at x received in [9] ms.\nmembers: 7"


def test_eight_nodes_change_in_two_waves_each_drained_in_one_reload(eight):
    inv, facts = eight
    p = planning.plan(inv, facts, "delta", deploy_id="20261201T100000Z-abcdef", time="t")
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [(s.host, s.wave) for s in restarts] == [(n, 1 if i < 4 else 2) for i, n in enumerate(names(8))]
    assert all(s.drain and s.waits_for_state and s.members == 7 for s in restarts)
    assert restarts[0].drain == restarts[3].drain != restarts[4].drain  # one drained site per wave
    assert "wave 1/2 with tomcat2, tomcat3, tomcat4" in restarts[0].describe()
    hosts = [h.name for h in inv.hosts]
    fake = FakeRemote([
        *[Expect(h, "base64 -d") for h in names(8)],  # every Tomcat's files, in parallel
        Expect("nginx", "systemctl reload nginx"),  # wave 1 out of service
        *[Expect(n, "systemctl restart tomcat10", STATE) for n in names(8)[:4]],
        Expect("nginx", "systemctl reload nginx"),  # wave 1 back, wave 2 out: one reload
        *[Expect(n, "systemctl restart tomcat10", STATE) for n in names(8)[4:]],
        Expect("nginx", "systemctl reload nginx"),  # wave 2 back
        *[Expect(h, "ss -Hntl", ports(inv, h)) for h in hosts],
    ])
    events = []
    outcome = Interpreter(fake, {h.name: h for h in inv.hosts}, events.append).apply(p, hosts)
    assert outcome.ok, outcome.error
    fake.assert_done()
    assert outcome.done == list(p.steps)
    # the drain of wave 1 marks exactly its four nodes down; the next reload carries wave 2's
    drain1, drain2 = fake.log[8][1], fake.log[13][1]
    assert restarts[0].drain.drained != restarts[4].drain.drained
    import base64
    assert base64.b64encode(restarts[0].drain.drained).decode() in drain1
    assert base64.b64encode(restarts[4].drain.drained).decode() in drain2
    assert base64.b64encode(restarts[4].drain.site).decode() in fake.log[18][1]
    assert "restarted tomcat10, serving, session state received, sees 7 cluster member(s)" in [
        e.text for e in events if e.kind == "done"]


def test_a_failure_in_a_wave_stops_before_the_next_and_puts_the_wave_back(eight):
    inv, facts = eight
    p = planning.plan(inv, facts, "delta", deploy_id="20261201T100000Z-abcdef", time="t")
    hosts = [h.name for h in inv.hosts]
    fake = FakeRemote([
        *[Expect(h, "base64 -d") for h in names(8)],
        Expect("nginx", "systemctl reload nginx"),
        Expect("tomcat1", "systemctl restart tomcat10", STATE),
        Expect("tomcat2", "systemctl restart tomcat10", "sees 3 of 7 cluster members after 120 s", ok=False),
        Expect("tomcat3", "systemctl restart tomcat10", STATE),
        Expect("tomcat4", "systemctl restart tomcat10", STATE),
        Expect("nginx", "systemctl reload nginx"),  # wave 1 back in service, and nothing after it
    ])
    outcome = Interpreter(fake, {h.name: h for h in inv.hosts}).apply(p, hosts)
    fake.assert_done()
    assert not outcome.ok and "sees 3 of 7 cluster members" in outcome.error
    assert outcome.hosts["tomcat2"].startswith("failed") and outcome.hosts["tomcat5"] == "in progress"
    assert outcome.hosts["tomcat1"] == "done"  # its changes are (checks judge the cluster)


def test_no_matching_context_manager_fails_the_restart(eight):
    inv, facts = eight
    p = planning.plan(inv, facts, "delta", deploy_id="x", time="t")
    s = next(s for s in p.steps if isinstance(s, RestartTomcat))
    bad = ("state: Manager [localhost#]: In reply to the 'Get all session data' message sent at [x], "
           "a 'No matching context manager' message was received after [5] ms.")
    assert "got no session state" in s.check(bad)
    assert s.check(STATE) is None


def test_backup_manager_waits_for_every_member_one_node_at_a_time(eight):
    inv, facts = eight
    inv = inventory(8, '[delta]\nmanager = "backup"\nchannel_send_options = 2\n')
    p = planning.plan(inv, facts, "delta", deploy_id="x", time="t")
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [s.wave for s in restarts] == list(range(1, 9))
    assert all(s.members == 7 and not s.waits_for_state for s in restarts)
    assert "sort -u | wc -l); [ \"$m\" -ge 7 ]" in restarts[0].script()


def test_rollback_restarts_in_the_same_waves(eight):
    inv, facts = eight
    p = planning.plan(inv, facts, "delta", deploy_id="20261201T100000Z-abcdef", time="t")
    current, records = applied(facts, p)
    rb = plan_rollback(inv, records, current, facts)
    restarts = [s for s in rb.steps if isinstance(s, RestartTomcat)]
    assert [(s.host, s.wave) for s in restarts] == [(s.host, s.wave) for s in p.steps if isinstance(s, RestartTomcat)]
    # each wave's restarts are consecutive (the interpreter runs them together)
    kinds = [type(s).__name__ for s in rb.steps]
    first = kinds.index("RestartTomcat")
    assert kinds[first:first + 8] == ["RestartTomcat"] * 8 and "ApplyNginx" not in kinds
    assert kinds[first + 8:] == ["CheckPorts"] * 9  # then every port checked, as after a deploy


def test_a_rollback_whose_site_lists_fewer_nodes_keeps_one_listed_node_serving(eight_after_two):
    """Undoing a scale-out from 2 to 8: the restored site sends only to tomcat1 and tomcat2, so
    neither wave may hold both (nginx would have no node left)."""
    inv, facts = eight_after_two
    p = planning.plan(inv, facts, "delta", deploy_id="20261201T100000Z-abcdef", time="t")
    current, records = applied(facts, p)
    rb = plan_rollback(inv, records, current, facts)
    restarts = [s for s in rb.steps if isinstance(s, RestartTomcat)]
    got = {}
    for s in restarts:
        got.setdefault(s.wave, []).append(s.host)
    # wave 1 cannot hold tomcat2 too; wave 2 may (tomcat1 serves again by then)
    assert list(got.values()) == [["tomcat1"], names(8)[1:5], names(8)[5:]]
    assert b"10.153.0.113:8080 max_fails=1 fail_timeout=5s down;" in restarts[1].drain.drained
    assert all(s.drain is None for s in restarts if s.wave == 3)  # nginx does not send to them

# --------------------------------------------------------------------------- guidance at size


def test_more_than_four_delta_manager_tomcats_get_the_backup_manager_advice():
    assert DELTA.advice(inventory(4)) == []
    (advice,) = DELTA.advice(inventory(5))
    assert advice.startswith("5 Tomcats with DeltaManager") and 'manager = "backup"' in advice
    assert "about four nodes" in advice
    assert DELTA.advice(inventory(8, '[delta]\nmanager = "backup"\n')) == []
    assert MSM.advice(inventory(8)) == []


def test_status_renders_the_advice_and_json_carries_it():
    from tcsession.status import Report
    from tcsession.ui import render_status
    r = Report((), "delta", advice=tuple(DELTA.advice(inventory(8))))
    lines = [t for t, _ in render_status(r, 80)]
    assert lines[1].startswith("advice: 8 Tomcats with DeltaManager") and all(len(l) <= 80 for l in lines)
    assert r.to_dict()["advice"] == list(r.advice)


def test_a_first_deploy_waits_only_for_members_that_run_the_cluster(eight):
    """Debian starts tomcat10 on install with its own server.xml (no Cluster): those running
    nodes are no members yet, so the first node restarted waits for none, the next for it."""
    inv, facts = eight
    stock = (Path(__file__).parent / "data/debian-bookworm-tomcat10/server.xml").read_bytes()
    t = facts["tomcat2"]
    assert t.active.get("tomcat10") == "active"
    fresh = dataclasses.replace(t, files={**t.files, "/etc/tomcat10/server.xml": dataclasses.replace(
        t.files["/etc/tomcat10/server.xml"], content=stock)})
    facts = {**facts, **{n: fresh for n in names(8)}}
    p = planning.plan(inv, facts, "delta", deploy_id="x", time="t")
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [s.wave for s in restarts] == [1, 2, 2, 2, 2, 3, 3, 3]
    assert [s.members for s in restarts] == [0, 4, 4, 4, 4, 7, 7, 7]


# --------------------------------------------------------------------------- files Tomcat redeploys on


def test_a_context_xml_change_is_written_in_the_nodes_wave_after_the_drain():
    """Tomcat redeploys the application as soon as its META-INF/context.xml changes (404s while
    it does, on every node at once if written with the other files): each node's context.xml is
    written in its wave, after nginx took it out of service; its prior bytes are saved first."""
    from test_plan import jars_on

    inv = parse_inventory((Path(__file__).resolve().parent.parent / "hosts.toml").read_text().partition("[delta]")[0]
                          + '[msm]\nrequest_uri_ignore_pattern = ".*\\\\.(ico|css)$"\n', Path("/x/hosts.toml"))
    facts = {n: parse_facts((DATA / f"msm-sticky-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}
    jars = {t: jars_on(facts[t]) for t in ("tomcat1", "tomcat2")}
    p = planning.plan(inv, facts, "msm", jars, deploy_id="20261201T100000Z-abcdef", time="t")
    ctx = "/var/lib/tomcat10/webapps/ROOT/META-INF/context.xml"
    kinds = [(type(s).__name__, s.host, getattr(s, "wave", 0)) for s in p.steps]
    assert kinds[:4] == [("WriteFiles", "tomcat1", 0), ("WriteFiles", "tomcat2", 0),
                         ("RestartTomcat", "tomcat1", 1), ("RestartTomcat", "tomcat2", 2)]
    first, restart = p.steps[0], p.steps[2]
    assert first.changes == () and [c.path for c in first.deferred] == [ctx]
    assert [c.path for c in restart.files] == [ctx]
    before = facts["tomcat1"].files[ctx].content
    import base64
    assert base64.b64encode(before).decode() in first.script()  # saved before anything is written
    script = restart.script()
    assert script.index("systemctl stop tomcat10") < script.index(ctx) < script.index("systemctl restart tomcat10")
    fake = FakeRemote([
        Expect("tomcat1", "manifest.json"), Expect("tomcat2", "manifest.json"),
        Expect("nginx", "systemctl reload nginx"),  # tomcat1 out of service, then stopped, its file, started
        Expect("tomcat1", ctx),
        Expect("nginx", "systemctl reload nginx"),
        Expect("tomcat2", ctx),
        Expect("nginx", "systemctl reload nginx"),
    ])
    changes = dataclasses.replace(p, steps=p.steps[:4])  # the checks after them are tested elsewhere
    outcome = Interpreter(fake, {h.name: h for h in inv.hosts}).apply(changes, [h.name for h in inv.hosts])
    assert outcome.ok, outcome.error
    fake.assert_done()
    assert outcome.done == list(changes.steps)
    assert fake.commands == 2 + 1 + 1 + 1 + 1 + 1  # each node's file written inside its restart


def test_the_rollback_of_a_context_xml_change_restores_it_in_each_nodes_wave():
    from test_plan import jars_on

    inv = parse_inventory((Path(__file__).resolve().parent.parent / "hosts.toml").read_text().partition("[delta]")[0]
                          + '[msm]\nrequest_uri_ignore_pattern = ".*\\\\.(ico|css)$"\n', Path("/x/hosts.toml"))
    facts = {n: parse_facts((DATA / f"msm-sticky-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}
    jars = {t: jars_on(facts[t]) for t in ("tomcat1", "tomcat2")}
    p = planning.plan(inv, facts, "msm", jars, deploy_id="20261201T100000Z-abcdef", time="t")
    current, records = {}, {}
    for s in p.steps:  # the hosts once the deploy ran: every change written (late ones too)
        if isinstance(s, WriteFiles):
            files = current.setdefault(s.host, {})
            for c in (*s.changes, *s.deferred):
                files.setdefault(c.path, FileFact(c.path, c.after, c.mode, c.owner))
            for r, c in ((r, c) for r in s.manifest.files for c in s.deferred + s.changes if c.path == r.path):
                if r.saved:
                    path = f"{state.deploy_dir(s.deploy_id)}/{r.saved}"
                    files[path] = FileFact(path, c.before, "600", "root:root")
            records[s.host] = state.Record(s.host, s.manifest)
    rb = plan_rollback(inv, records, current, facts)
    ctx = "/var/lib/tomcat10/webapps/ROOT/META-INF/context.xml"
    kinds = [(type(s).__name__, s.host, getattr(s, "wave", 0)) for s in rb.steps]
    # only the context.xml changed: it goes back inside each node's restart, in its wave
    assert kinds[:4] == [("RestoreFiles", "tomcat1", 0), ("RestoreFiles", "tomcat2", 0),
                         ("RestartTomcat", "tomcat1", 1), ("RestartTomcat", "tomcat2", 2)]
    assert {k for k, _, _ in kinds[4:]} == {"CheckPorts", "CheckMemcached"}  # msm restored: its checks
    assert rb.steps[0].changes == () and "rolled-back" in rb.steps[0].script()
    restart = rb.steps[2]
    assert [c.path for c in restart.files] == [ctx]
    assert restart.files[0].after == facts["tomcat1"].files[ctx].content
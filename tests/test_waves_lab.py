"""Tomcats changed in waves (four in the default run, eight behind -m measure), on real hosts,
under a bounded client load through nginx
(10 sessions, 20 requests/s): a configuration change with 0 failed requests, 0 lost updates and
every Tomcat's PID changed, with DeltaManager (waves of four), BackupManager (one at a time, each
waiting until it sees its seven peers) and memcached-session-manager with the real jars (waves of
four); then every node sees all its peers (`inv status`).

8 Tomcats on 2 shared cores are slow: the default run proves the waves on four (two waves of
two), `-m measure` on eight (the figures in the README); one lab per size, one fresh deploy, and
the settings changed through variants of the inventory."""

from __future__ import annotations


import pytest

from conftest import host_state, new_lab, real_msm_repo, session_of, wait_answered
from tcsession import status
from tcsession.deploy import deploy
from tcsession.inventory import load_inventory
from tcsession.load import Load
from tcsession.steps import RestartTomcat

pytestmark = pytest.mark.lab

SIZES = {4: ("tcswlab4", "10.153.50.0/24"), 8: ("tcswlab", "10.153.51.0/24")}
ROLLS = ("tcswlab2", "10.153.52.0/24")  # 2 Tomcats, the default inventory (static membership: a new cluster)


@pytest.fixture(scope="module", params=[4, pytest.param(8, marks=pytest.mark.measure)])
def eight(request, tmp_path_factory):
    name, subnet = SIZES[request.param]
    lab = new_lab(tmp_path_factory, name, subnet, tomcats=request.param, deploy_mode="delta")
    handle = next(lab)
    handle.tomcats = [f"tomcat{i}" for i in range(1, request.param + 1)]
    try:
        yield handle
    finally:
        lab.close()  # takes the lab down


def variant(handle, name: str, extra: str):
    path = handle.inv_path.parent / f"{name}.toml"
    path.write_text(handle.inv_path.read_text() + "\n" + extra)
    return load_inventory(path)


def pids(handle) -> dict[str, str]:
    out = {t: handle.pid(t, "tomcat10") for t in handle.tomcats}
    assert "0" not in out.values(), out
    return out


def waves_of(report) -> list[list[str]]:
    out: dict[int, list[str]] = {}
    for s in report.executed:
        if isinstance(s, RestartTomcat):
            out.setdefault(s.wave, []).append(s.host)
    return list(out.values())


def change_under_load(handle, inv, mode="delta"):
    before = pids(handle)
    with Load(inv.nginx.address, sessions=10, rate=20, mode=mode) as load:
        wait_answered(load)
        report = deploy(inv, mode, quiet=True)
        wait_answered(load)
    after = pids(handle)
    print(f"\n{inv.path.name}: waves {waves_of(report)}; {load.result.line()}")
    assert report.changed
    assert load.result.requests > 100
    assert (load.result.failed, load.result.lost_updates) == (0, 0), load.result.errors
    assert all(after[t] != before[t] for t in handle.tomcats), (before, after)
    return report


def missing_peers(inv, report) -> dict[str, set[str]]:
    """In delta mode, each Tomcat's peers (address:receiver port) that its view, as status reads
    it from the member events in its log, lacks; only the Tomcats that lack one."""
    missing = {}
    for h in report.hosts:
        if h.role == "tomcat" and report.mode == "delta":
            peers = {f"{t.address}:{inv.delta.receiver_port}" for t in inv.tomcats if t.name != h.name}
            if peers - set(h.members):
                missing[h.name] = peers - set(h.members)
    return missing


def every_node_sees_its_peers(inv):
    report = status.cluster_report(inv)
    assert report.healthy, [(h.name, h.problems) for h in report.hosts if h.problems]
    assert not missing_peers(inv, report), [(h.name, h.members) for h in report.hosts]


def halves(handle) -> list[list[str]]:
    n = len(handle.tomcats) // 2
    return [handle.tomcats[:n], handle.tomcats[n:]]


def test_delta_manager_changes_in_waves_of_half_under_load(eight):
    inv = variant(eight, "delta-2", "[delta]\nchannel_send_options = 2\n")
    report = change_under_load(eight, inv)
    assert waves_of(report) == halves(eight)
    every_node_sees_its_peers(inv)


@pytest.mark.measure  # at 8 nodes: 16 restarts one after the other; CI proves the order by the unit tests
# (test_waves: one at a time, each waiting for 7 members) and BackupManager on the shared cluster (test_delta)
def test_backup_manager_changes_one_node_at_a_time_under_load(eight):
    switched = variant(eight, "backup", '[delta]\nmanager = "backup"\n')
    assert waves_of(deploy(switched, "delta", quiet=True)) == [[t] for t in eight.tomcats]  # the switch: no load
    inv = variant(eight, "backup-2", '[delta]\nmanager = "backup"\nchannel_send_options = 2\n')
    report = change_under_load(eight, inv)
    assert waves_of(report) == [[t] for t in eight.tomcats]
    assert all(s.members == len(eight.tomcats) - 1 for s in report.executed if isinstance(s, RestartTomcat))
    every_node_sees_its_peers(inv)


@pytest.mark.measure  # at 8 nodes; CI proves msm's rolling change under load with the real jars on two
# Tomcats of each release (test_msm_real) and the waves of four here with DeltaManager
def test_msm_with_the_real_jars_changes_in_waves_under_load(eight):
    repo = real_msm_repo()
    switched = variant(eight, "msm", f'[msm]\nmaven_repo = "{repo}"\n')
    assert deploy(switched, "msm", quiet=True).changed  # the switch (memcached installed): no load
    inv = variant(eight, "msm-2", f'[msm]\nmaven_repo = "{repo}"\nrequest_uri_ignore_pattern = ".*\\\\.(ico|css)$"\n')
    report = change_under_load(eight, inv, mode="msm")
    assert waves_of(report) == halves(eight)
    assert not any(type(s).__name__ == "RestartMemcached" for s in report.executed)  # its config did not change
    every_node_sees_its_peers(inv)


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    yield from new_lab(tmp_path_factory, *ROLLS, deploy_mode="delta")


@pytest.mark.measure  # about 3 minutes: 20 deploys of two restarts each; issue 24's proof of the default
def test_twenty_rolling_changes_in_a_row_under_load_lose_nothing_and_every_restart_gets_the_state(two):
    """The default inventory of a new cluster (static membership, drain, state gate, log gate), one
    setting flipped 20 times in a row while 5 sessions make 20 requests/s through nginx: every
    deploy restarts both Tomcats, no request fails, no update is lost, and every restart (each has
    a live peer: the other node) reports the session state received."""
    inv = load_inventory(two.inv_path)
    assert inv.delta.membership is None  # not set: static, since this cluster is new
    assert "StaticMembershipService" in two.check("tomcat1", "cat /etc/tomcat10/server.xml")
    flips = [variant(two, f"send-{v}", f"[delta]\nchannel_send_options = {v}\n") for v in (2, 6)]
    done: list[tuple[str, str, float]] = []

    def on(e):
        if e.kind == "done" and isinstance(e.step, RestartTomcat):
            done.append((e.step.host, e.text, e.seconds))

    times = []
    with Load(inv.nginx.address, sessions=5, rate=20) as load:
        wait_answered(load)
        for i in range(20):
            before = len(done)
            report = deploy(flips[i % 2], "delta", quiet=True, on_event=on)
            times.append(report.seconds)
            assert report.changed and len(done) - before == 2, (i, done[before:])
        wait_answered(load)
    r = load.result
    received = sum(1 for _, text, _ in done if "session state received" in text)
    print(f"\n20 rolling changes, 2 Tomcats, static membership: {r.line()}; {len(done)} restarts, "
          f"{received} with the session state received; deploy s: min {min(times):.2f} "
          f"median {sorted(times)[len(times) // 2]:.2f} max {max(times):.2f}")
    assert (r.failed, r.lost_updates) == (0, 0), r.errors[:5]
    assert r.requests > 20 * 20
    assert len(done) == 40 and received == 40, [t for _, t, _ in done if "session state received" not in t]
    every_node_sees_its_peers(flips[1])


@pytest.mark.measure  # issue 24: a switch of membership kind on a running cluster under load loses nothing
def test_switching_membership_kind_under_load_is_measured(two):
    """Static -> multicast -> static on the running 2-Tomcat cluster, each under 5 sessions at 20
    requests/s: each switch is three rolling passes (through the two bridges, rollout.CHAIN), every
    restart gets the session state, no request fails and no update is lost; then the switched
    cluster is whole, runs the plain kind (no bridge left) and a deploy that asks nothing new is a
    no-op. Printed: the figures and each pass's time."""
    for kind in ("multicast", "static"):
        inv = variant(two, f"kind-{kind}", f'[delta]\nmembership = "{kind}"\n')
        done: list[str] = []
        with Load(inv.nginx.address, sessions=5, rate=20) as load:
            wait_answered(load)
            report = deploy(inv, "delta", quiet=True, switch_membership=True,
                            on_event=lambda e: done.append(f"{e.step.host}: {e.text} ({e.seconds:.1f} s)")
                            if e.kind == "done" and isinstance(e.step, RestartTomcat) else None)
            wait_answered(load)
        r = load.result
        print(f"\nswitch to {kind} under load in {report.seconds:.1f} s: {r.line()}; " + "; ".join(done))
        assert report.changed and len(done) == 6, done  # 3 passes of 2 restarts
        assert (r.failed, r.lost_updates) == (0, 0), r.errors[:5]
        assert r.requests > 100
        assert all("session state received" in d for d in done), done
        written = two.check("tomcat2", "cat /etc/tomcat10/server.xml")
        assert ("McastService" in written) == (kind == "multicast"), written
        assert "StaticMembershipInterceptor" not in written, written
        every_node_sees_its_peers(inv)
        def tomcats_state() -> dict:  # server.xml's checksum, the JVM's PID, the packages
            return {t: host_state(two, t, files=("/etc/tomcat10/server.xml",), units=("tomcat10",))
                    for t in ("tomcat1", "tomcat2")}

        before = tomcats_state()
        assert not deploy(inv, "delta", quiet=True).changed  # the switched cluster asks for nothing more
        assert tomcats_state() == before  # same file, same JVMs, same packages


def test_static_membership_a_killed_tomcat_rejoins_both_views_and_the_session_survives(two):
    """The default of a new cluster (static membership) through the loss the drained restarts never
    cause: a Tomcat killed (SIGKILL: no "member stopped" message to its peer) and started again.
    Its peer must list it again (status, polled at most 15 s: how long it took is printed), the
    restarted node must have received the state, and when the other node is then killed the
    session goes on there with its count."""
    import time

    inv = load_inventory(two.inv_path)
    assert "StaticMembershipService" in two.check("tomcat1", "cat /etc/tomcat10/server.xml")
    client = session_of(inv, 5)
    run = client.run
    serving = run.last_node
    other = next(t.name for t in inv.tomcats if t.name != serving)
    since = two.check(other, "date +%s").strip()
    two.check(other, "systemctl kill -s KILL tomcat10")
    client.request()  # the serving node was never touched
    two.start_serving(other, "tomcat10")
    started = time.monotonic()
    while True:  # the peer's view: its log's member events since it started (status's reading)
        report = status.cluster_report(inv, session_requests=0)
        whole = report.mode == "delta" and not missing_peers(inv, report)
        if whole or time.monotonic() - started > 15:
            break
        time.sleep(0.5)
    print(f"\nstatic membership: {other} killed and started again; both views whole after "
          f"{time.monotonic() - started:.1f} s")
    assert whole and report.healthy, [(h.name, h.problems, h.members) for h in report.hosts]
    state = two.check(other, f"journalctl -u tomcat10 --since @{since} --no-pager -o cat | "
                             "grep -i 'session state' || true")
    assert "received in" in state, state
    two.check(serving, "systemctl kill -s KILL tomcat10")
    client.request()
    assert run.ok and run.last_count == 7 and run.last_node == other, run.to_dict()
    two.start_serving(serving, "tomcat10")

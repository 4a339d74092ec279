"""Judging hosts is pure: facts captured from deployed lab hosts in, checks out."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tcsession import status
from tcsession.facts import parse_facts
from tcsession.inventory import load_inventory

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "facts"
LOOPBACK_MEMBER = ("Replication member added:[org.apache.catalina.tribes.membership.MemberImpl"
                   "[tcp://{127, 0, 1, 1}:4000,{127, 0, 1, 1},4000, alive=1026]]")


def facts(name: str):
    return parse_facts((DATA / f"bookworm-delta-{name}.txt").read_text())


def test_a_deployed_node_is_healthy_and_sees_its_peer():
    inv = load_inventory(ROOT / "hosts.toml")
    st = status.judge_tomcat(inv, inv.host("tomcat1"), facts("tomcat1"), "delta")
    assert st.problems == []
    assert st.members == ("10.153.0.113:4000",)
    assert {w for w, ok, _ in st.checks} >= {"tomcat10 active", "tcp 10.153.0.112:4000", "udp 228.0.0.4:45564",
                                            "delta cluster in server.xml", "cluster members"}


def test_a_peer_advertising_a_loopback_address_is_flagged():
    inv = load_inventory(ROOT / "hosts.toml")
    f = facts("tomcat1")
    bad = dataclasses.replace(f, cluster_log=LOOPBACK_MEMBER)
    st = status.judge_tomcat(inv, inv.host("tomcat1"), bad, "delta")
    assert any("loopback" in p and "127.0.1.1:4000" in p for p in st.problems)


def test_a_node_that_sees_no_peer_is_unhealthy():
    inv = load_inventory(ROOT / "hosts.toml")
    f = dataclasses.replace(facts("tomcat2"), cluster_log="")
    st = status.judge_tomcat(inv, inv.host("tomcat2"), f, "delta")
    assert st.problems == ["cluster members: sees 0 of 1 peers; missing 10.153.0.112:4000"]


def test_a_stopped_tomcat_fails_its_checks():
    inv = load_inventory(ROOT / "hosts.toml")
    f = facts("tomcat1")
    stopped = dataclasses.replace(f, active={**f.active, "tomcat10": "inactive"}, listeners=(), cluster_log="")
    st = status.judge_tomcat(inv, inv.host("tomcat1"), stopped, "delta")
    assert "tomcat10 active: inactive" in st.problems
    assert "tcp 10.153.0.112:8080: not listening" in st.problems


def test_mode_is_detected_from_the_managed_cluster():
    inv = load_inventory(ROOT / "hosts.toml")
    assert status.detect_mode(inv, {n: facts(n) for n in ("nginx", "tomcat1", "tomcat2")}) == "delta"
    fresh = parse_facts((DATA / "bookworm-fresh-tomcat1.txt").read_text())
    assert status.detect_mode(inv, {"nginx": fresh, "tomcat1": fresh, "tomcat2": fresh}) is None


def msm_facts(name: str):
    return parse_facts((DATA / f"msm-sticky-{name}.txt").read_text())


STANDIN_LINE = ("tcsession-standin: MemcachedBackupSessionManager STAND-IN (a test double, not memcached-session-manager; "
                "sessions are not backed up) started on Apache Tomcat/10.1.60 (Debian)")
# As the real tc9 manager (anonymous MemcachedSessionService subclass) logged them on the
# bookworm lab, through MEMBERSHIP_SCRIPT's grep (journal text, no level, no class name).
MSM_LINE = (" starts initialization... (configured nodes definition n1:10.153.0.112:11211,n2:10.153.0.113:11211, "
            "failover nodes n1)\n-  finished initialization:\n- node ids: [n2]\n- failover node ids: [n1]")
# A Manager that failed to start (memcachedNodes="garbage"), on the same lab: the journal's
# err-priority lines, prefixed by MEMBERSHIP_SCRIPT.
MSM_FAILED = (" starts initialization... (configured nodes definition garbage, failover nodes n1)\n"
              "SEVERE The session manager failed to start\n"
              "SEVERE org.apache.catalina.LifecycleException: Failed to start component [MemcachedBackupSessionManager"
              "[StandardEngine[Catalina].StandardHost[localhost].StandardContext[]]]\n"
              "SEVERE Caused by: java.lang.IllegalArgumentException: Configured memcachedNodes attribute has wrong "
              "format, must match ([\\w]+):([^:]+):([\\d]+)(?:(?:\\s+|,)([\\w]+):([^:]+):([\\d]+))*\n"
              "SEVERE Context [] startup failed due to previous errors")


def test_msm_start_is_recognised_from_the_real_lines():
    assert status.judge_msm_start(MSM_LINE) == (
        True, "finished initialization: node ids [n2], failover node ids [n1]")
    ok, detail = status.judge_msm_start(MSM_FAILED)
    assert not ok and detail.startswith("failed to start: SEVERE The session manager failed to start (SEVERE Caused by: "
                                        "java.lang.IllegalArgumentException: Configured memcachedNodes")
    # started but not finished, and no error line
    assert status.judge_msm_start(MSM_LINE.split("\n")[0]) == (
        False, "started initialization but never finished it (see the Tomcat log)")
    assert not status.judge_msm_start("Server startup in [774] milliseconds")[0]
    # a SEVERE that has nothing to do with the Manager does not fail msm
    assert status.judge_msm_start(MSM_LINE + "\nSEVERE Servlet.service() for servlet [jsp] threw exception")[0]


def test_msm_mode_is_detected_and_judged(tmp_path):
    path = tmp_path / "hosts.toml"  # no hosts.msm.lock (nor msm.lock) beside it
    path.write_text((ROOT / "hosts.toml").read_text())
    inv = load_inventory(path)
    all_facts = {n: msm_facts(n) for n in ("nginx", "tomcat1", "tomcat2")}
    assert status.detect_mode(inv, all_facts) == "msm"
    reachable = {"10.153.0.112:11211": {"version": "1.6.18", "curr_items": "3"},
                 "10.153.0.113:11211": {"version": "1.6.18", "curr_items": "1"}}
    f = dataclasses.replace(all_facts["tomcat1"], memcached=reachable, cluster_log=MSM_LINE)
    st = status.judge_tomcat(inv, inv.host("tomcat1"), f, "msm")
    checks = {w: (ok, d) for w, ok, d in st.checks}
    assert checks["tcp 10.153.0.112:11211"][0] and checks["memcached active"][0]
    assert checks["memcached only on 10.153.0.112"] == (True, "yes")
    assert checks["msm Manager"][0] and "failoverNodes n1" in checks["msm Manager"][1]
    assert checks["memcached reachable"] == (True, "10.153.0.112:11211 3 items, 10.153.0.113:11211 1 items")
    assert checks["msm initialized"] == (True, "finished initialization: node ids [n2], failover node ids [n1]")
    assert st.problems == [f"msm jars: cannot check them: de.javakaffee.msm:memcached-session-manager:2.3.2 not in "
                           f"{tmp_path / 'hosts.msm.lock'}"]


def test_msm_problems_are_named():
    inv = load_inventory(ROOT / "hosts.toml")
    f = msm_facts("tomcat2")
    from tcsession.probes import parse_ss

    wide = dataclasses.replace(f, memcached={"10.153.0.112:11211": {}, "10.153.0.113:11211": {"version": "1.6.18"}},
                               cluster_log=STANDIN_LINE,
                               listeners=f.listeners + parse_ss("LISTEN 0 1024 0.0.0.0:11211 0.0.0.0:*"))
    st = status.judge_tomcat(inv, inv.host("tomcat2"), wide, "msm")
    problems = "\n".join(st.problems)
    assert "memcached only on 10.153.0.113: also on 0.0.0.0: an open cache" in problems
    assert "memcached reachable: 10.153.0.113:11211 ? items; unreachable: 10.153.0.112:11211" in problems
    assert "(a test stand-in Manager is loaded, not memcached-session-manager)" in problems


def test_status_reads_well_at_80_and_120_columns():
    """No line wider than the terminal, no word cut: each check's text is whole once the wrapped
    lines are joined again (the old table broke `memcached only on 10.153.0.112:` mid-phrase)."""
    from tcsession import ui
    from tcsession.client import SessionRun

    inv = load_inventory(ROOT / "hosts.toml")
    hosts = [status.judge_nginx(inv, inv.nginx, parse_facts((DATA / "msm-sticky-nginx.txt").read_text()), "msm")]
    hosts += [status.judge_tomcat(inv, inv.host(t), parse_facts((DATA / f"msm-sticky-{t}.txt").read_text()), "msm")
              for t in ("tomcat1", "tomcat2")]
    report = status.Report(tuple(hosts), "msm", SessionRun())
    for width in (80, 120):
        lines = [text for text, _ in ui.render_status(report, width)]
        assert max(len(l) for l in lines) <= width
        joined = " ".join(l.strip() for l in lines)
        for h in hosts:
            for what, ok, detail in h.checks:
                text = what if ok and detail in ("active", "listening", "present") else f"{what}: {detail}"
                assert " ".join(text.split()) in joined


def _report(session_id: str, memcached) -> "status.Report":
    from tcsession.client import SessionRun, parse_session_id

    run = SessionRun(requests=10, last_count=10, session_ids=[session_id] * 10)
    return status.Report((), "msm", run, 3, memcached, parse_session_id(session_id, "msm").node)


def test_msm_report_names_the_node_of_the_checks_session():
    nodes = (("n1", "10.153.0.112:11211", 3), ("n2", "10.153.0.113:11211", 0))
    good = _report("36F7C332B031851572AF7DFCFE0D6634-n1.tomcat2", nodes)
    assert good.healthy and good.session_node == "n1" and not good.msm_problems
    d = good.to_dict()
    assert d["session_check"]["memcached_node"] == "n1" and d["memcached_nodes"][1] == {
        "node": "n2", "address": "10.153.0.113:11211", "items": 0}
    empty = _report("36F7C332B031851572AF7DFCFE0D6634-n2.tomcat1", nodes)
    assert empty.msm_problems == ["session check: memcached node n2 holds no items after the check"]
    assert not empty.healthy
    plain = _report("36F7C332B031851572AF7DFCFE0D6634.tomcat1", nodes)  # a Manager that is not MSM
    assert not plain.healthy and "names no memcached node (n1, n2)" in plain.msm_problems[0]


def test_status_reads_the_inventory_mode_and_flags_hosts_that_run_another():
    r = status.Report(hosts=(), mode="delta", expected_mode="msm")
    assert r.mode_problems == ['mode: the Tomcats run delta mode, the inventory\'s [cluster] mode is "msm"; deploy it '
                               "(tcsession deploy)"] and not r.healthy
    assert status.Report(hosts=(), mode=None, expected_mode="delta").mode_problems[0].startswith(
        "mode: the Tomcats run neither mode")
    assert status.Report(hosts=(), mode="msm", expected_mode="msm").healthy
    assert status.Report(hosts=(), mode="msm").healthy  # no [cluster] mode: judged by what runs, as before
    d = status.Report(hosts=(), mode="delta", expected_mode="msm").to_dict()
    assert d["inventory_mode"] == "msm" and d["mode_problems"] and d["healthy"] is False

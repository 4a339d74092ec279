"""Issue 24's first wait removed: a change deploy on a running multicast cluster whose Tomcats see
each other as members does not probe multicast again (the probe listens and sends for about 1.4 s);
the running cluster has proven it. Judged from captured lab facts and a real Tomcat 10.1
membership log (tests/data/facts)."""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tcsession import preflight
from test_plan_golden import captured, shipped

DATA = Path(__file__).parent / "data" / "facts"
LOG = (DATA / "tomcat10-membership.log").read_text()  # tomcat2's: member 10.153.0.112 added


def logs() -> dict[str, str]:
    return {"tomcat1": LOG.replace("10, 153, 0, 112", "10, 153, 0, 113"), "tomcat2": LOG}


def test_a_running_multicast_cluster_whose_members_see_each_other_needs_no_probe():
    inv = shipped()
    assert preflight.multicast_in_use(inv, captured("deployed"))
    checks = preflight.judge_multicast_proven(inv, logs())
    assert set(checks) == {"tomcat1", "tomcat2"} and all(ok for _, ok, _ in checks.values())
    assert checks["tomcat1"][2] == ("228.0.0.4:45564 proven by the running cluster: tomcat1 sees its 1 peer(s) "
                                    "as members (probe skipped)")


def test_a_peer_not_seen_or_a_log_unread_means_the_probe_runs():
    inv = shipped()
    assert preflight.judge_multicast_proven(inv, {**logs(), "tomcat1": ""}) is None  # tomcat1 saw nobody
    assert preflight.judge_multicast_proven(inv, {**logs(), "tomcat2": None}) is None  # its log not read
    gone = LOG + LOG.replace("Replication member added", "Received member disappeared").split("\n", 1)[0]
    assert preflight.judge_multicast_proven(inv, {**logs(), "tomcat2": gone}) is None  # added, then gone


def test_only_a_cluster_running_on_the_inventorys_group_has_proven_it():
    facts = captured("deployed")
    stopped = {**facts, "tomcat2": dataclasses.replace(facts["tomcat2"], active={
        **facts["tomcat2"].active, facts["tomcat2"].tomcat.unit: "inactive"})}
    assert not preflight.multicast_in_use(shipped(), stopped)  # a Tomcat down: the probe runs
    assert not preflight.multicast_in_use(shipped('[delta]\nmulticast_address = "228.0.0.9"\n'), facts)  # a new group
    assert not preflight.multicast_in_use(shipped('[delta]\nmulticast_port = 45600\n'), facts)
    assert not preflight.multicast_in_use(shipped(), captured("msm-sticky"))  # no cluster runs (msm)

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

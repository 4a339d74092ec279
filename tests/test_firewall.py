"""[firewall] backend = "nftables": the rules per mode (tcsession.firewall), what deploy plans
(files, the step, the package), that a second run changes nothing, "none" removing tcsession's
rules, and rollback loading or removing them. Real inputs: the facts captured from a deployed
lab cluster (tests/data/facts). The rules' effect on real hosts: tests/test_firewall_lab.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tcsession import firewall
from tcsession import plan as planning
from tcsession.facts import FileFact, parse_facts
from tcsession.inventory import parse_inventory
from tcsession.modes import DELTA, MSM
from tcsession.steps import ApplyFirewall

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "facts"


def inventory(backend: str = "nftables", extra: str = ""):
    text = (ROOT / "hosts.toml").read_text() + f'\n[firewall]\nbackend = "{backend}"\n' + extra
    return parse_inventory(text, ROOT / "hosts.toml")


@pytest.fixture
def deployed():
    return {n: parse_facts((DATA / f"deployed-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}


def with_files(f, files: dict, active: str = "active"):
    """A host's facts with `files` on it and tcsession-firewall in state `active`."""
    extra = {p: FileFact(p, data, "644", "root:root") for p, data in files.items()}
    return dataclasses.replace(f, files={**f.files, **extra}, active={**f.active, firewall.UNIT: active},
                               packages={**f.packages, "nftables": "1.0.6-2+deb12u2"})


def test_the_rules_open_each_port_to_the_hosts_that_need_it_only():
    inv = inventory()
    t1, t2 = inv.host("tomcat1"), inv.host("tomcat2")
    delta = firewall.rules(inv, t1, DELTA)
    assert delta == [("HTTP", "tcp", t1.http_port, (inv.nginx.address,)),
                     ("cluster receiver", "tcp", inv.delta.receiver_port, (t2.address,)),
                     ("multicast membership", "udp", inv.delta.multicast_port, (t2.address,))]
    assert firewall.rules(inv, t1, MSM) == [("HTTP", "tcp", t1.http_port, (inv.nginx.address,)),
                                            ("memcached", "tcp", inv.msm.memcached_port, (t1.address, t2.address))]
    static = inventory(extra="")
    static = dataclasses.replace(static, delta=dataclasses.replace(static.delta, membership="static"))
    assert [w for w, *_ in firewall.rules(static, t1, DELTA)] == ["HTTP", "cluster receiver"]  # no multicast


def test_the_rules_file_replaces_the_table_in_one_transaction_and_accepts_loopback():
    inv = inventory()
    text = firewall.render_rules(inv, inv.host("tomcat2"), DELTA).decode()
    lines = [l.strip() for l in text.splitlines()]
    # declare, delete, define: idempotent whether or not the table exists, one nft -f transaction
    assert lines[3:6] == ["table inet tcsession", "delete table inet tcsession", "table inet tcsession {"]
    assert 'iif "lo" accept' in lines and "policy accept;" in text  # only the cluster's ports are touched
    t1 = inv.host("tomcat1").address
    assert f"ip saddr {{ {inv.nginx.address} }} tcp dport 8080 accept" in lines
    assert lines.index("tcp dport 8080 drop") > lines.index(f"ip saddr {{ {inv.nginx.address} }} tcp dport 8080 accept")
    assert f"ip saddr {{ {t1} }} tcp dport {inv.delta.receiver_port} accept" in lines
    assert f"ip saddr {{ {t1} }} udp dport {inv.delta.multicast_port} accept" in lines
    unit = firewall.render_unit().decode()
    assert f"ExecStart=/usr/sbin/nft -f {firewall.RULES}" in unit and "ExecStop=/usr/sbin/nft delete table inet tcsession" in unit
    assert "Before=network-pre.target" in unit and "WantedBy=multi-user.target" in unit


def test_deploy_writes_the_rules_loads_them_and_then_changes_nothing(deployed):
    inv = inventory()
    assert planning.packages_to_install(inv.host("tomcat1"), deployed["tomcat1"], DELTA, "nftables") == ("nftables",)
    assert planning.packages_to_install(inv.host("nginx"), deployed["nginx"], DELTA, "nftables") == ()
    facts = {n: dataclasses.replace(f, packages={**f.packages, "nftables": "1.0.6"}) for n, f in deployed.items()}
    p = planning.plan(inv, facts, "delta")
    for t in ("tomcat1", "tomcat2"):
        assert {c.path for c in p.files(t)} == {firewall.RULES, firewall.UNIT_FILE}
        (step,) = [s for s in p.steps if isinstance(s, ApplyFirewall) and s.host == t]
        assert not step.remove and step.why == "its rules change"
        assert not p.restarts(t)  # the rules alone restart no Tomcat
    assert not [s for s in p.steps if isinstance(s, ApplyFirewall) and s.host == "nginx"]
    assert "nft -f /etc/tcsession/firewall.nft" in [s for s in p.steps if isinstance(s, ApplyFirewall)][0].script()
    # the rules in place and loaded: nothing to do
    loaded = {n: with_files(f, {firewall.RULES: firewall.render_rules(inv, inv.host(n), DELTA),
                                firewall.UNIT_FILE: firewall.render_unit()}) if n != "nginx" else f
              for n, f in facts.items()}
    assert planning.plan(inv, loaded, "delta").empty
    # in place but not loaded (someone stopped the unit): loaded again, no file written
    stopped = {**loaded, "tomcat1": with_files(loaded["tomcat1"], {}, active="inactive")}
    p = planning.plan(inv, stopped, "delta")
    assert not p.files("tomcat1") and [s.why for s in p.steps if isinstance(s, ApplyFirewall)] == [
        "tcsession-firewall is not running"]
    # msm: other ports, so the file changes
    assert firewall.RULES in {c.path for c in planning.tomcat_changes(inv, inv.host("tomcat1"), loaded["tomcat1"],
                                                                      MSM, ()).files}


def test_backend_none_removes_tcsessions_rules(deployed):
    on = inventory()
    loaded = {n: with_files(f, {firewall.RULES: firewall.render_rules(on, on.host(n), DELTA),
                                firewall.UNIT_FILE: firewall.render_unit()}) if n != "nginx" else f
              for n, f in deployed.items()}
    p = planning.plan(inventory("none"), loaded, "delta")
    for t in ("tomcat1", "tomcat2"):
        assert {(c.path, c.after) for c in p.files(t)} == {(firewall.RULES, None), (firewall.UNIT_FILE, None)}
    steps = [s for s in p.steps if isinstance(s, ApplyFirewall)]
    assert [s.remove for s in steps] == [True, True] and "nft delete table inet tcsession" in steps[0].script()
    # and without rules or unit, "none" plans nothing at all
    assert planning.plan(inventory("none"), deployed, "delta").empty

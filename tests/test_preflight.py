"""Preflight's judges, each shown passing and failing on output captured from lab hosts
(tests/data/preflight/, written by tests/test_preflight_lab.py with TCSESSION_CAPTURE) or, for
the clock (the lab hosts share this machine's clock), on `date +%s.%N` lines as the hosts print
them with a skew applied."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tcsession import preflight as pf
from tcsession.facts import parse_facts, preflight_sections, split_sections
from tcsession.inventory import load_inventory, parse_inventory
from tcsession.modes import DELTA, MSM

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "preflight"


@pytest.fixture
def inv():
    return load_inventory(ROOT / "hosts.toml")


def sections(name: str) -> dict:
    return preflight_sections(split_sections((DATA / name).read_text()))


def test_a_deployed_host_passes_every_check(inv):
    f = parse_facts((DATA / "deployed-tomcat2.txt").read_text())
    h = pf.judge_host(inv, inv.host("tomcat2"), f, DELTA, installing=False)
    assert h.problems == [], h.checks
    assert {w for w, _, _ in h.checks} == {"host name", "ports", "java", "jvm_route", "firewall", "disk"}
    assert pf.judge_java(f) == ("java", True, "Java 17 for Tomcat 10")


def test_nftables_beside_an_active_firewalld_is_refused(inv):
    import dataclasses

    f = parse_facts((DATA / "deployed-tomcat2.txt").read_text())
    nft = dataclasses.replace(inv, firewall="nftables")
    assert pf.judge_firewall(nft, f)[1] and pf.judge_firewall(inv, f)[1]
    with_firewalld = dataclasses.replace(f, active={**f.active, "firewalld": "active"})
    what, ok, detail = pf.judge_firewall(nft, with_firewalld)
    assert not ok and "firewalld is active" in detail and 'backend = "none"' in detail
    assert pf.judge_firewall(inv, with_firewalld)[1]  # "none": tcsession leaves it alone


def test_a_fresh_host_needs_no_java_yet(inv):
    f = parse_facts((DATA / "fresh-tomcat1.txt").read_text())
    assert pf.judge_java(f)[1] and "not installed yet" in pf.judge_java(f)[2]
    ok, detail = pf.judge_disk(f.preflight["disk"], installing=True)[1:]
    assert ok and "MiB free" in detail


def test_a_host_name_resolving_to_loopback_fails():
    what, ok, detail = pf.judge_resolve(sections("loopback-name-tomcat1.txt")["resolve"])
    assert not ok and "resolves to 127.0.1.1 (/etc/hosts)" in detail
    assert pf.judge_resolve(sections("port-held-tomcat2.txt")["resolve"])[1]


def test_a_port_held_by_another_process_fails(inv):
    lines = sections("port-held-tomcat2.txt")["ss"]
    what, ok, detail = pf.judge_ports(inv, inv.host("tomcat2"), DELTA, lines)
    assert not ok and detail.startswith("tcp 4000 (cluster receiver) is held by python3")
    # the same listeners do not matter to msm, which does not need 4000
    assert pf.judge_ports(inv, inv.host("tomcat2"), MSM, lines)[1]


def test_multicast_blocked_fails_and_says_static():
    """Captured with the lab bridge delivering no multicast to tomcat2."""
    outs = {n: (DATA / f"mcast-blocked-{n}.txt").read_text() for n in ("tomcat1", "tomcat2")}
    judged = pf.judge_multicast(outs, ["tomcat1", "tomcat2"], "228.0.0.4", 45564)
    assert judged["tomcat1"][1]  # tomcat2's datagrams still reach tomcat1
    assert not judged["tomcat2"][1] and judged["tomcat2"][2] == (
        'heard nothing on 228.0.0.4:45564 from tomcat1: multicast is not delivered between these hosts; '
        'use membership = "static" in [delta]')
    assert not pf.judge_multicast({"tomcat1": None, "tomcat2": outs["tomcat1"]}, ["tomcat1", "tomcat2"],
                                  "228.0.0.4", 45564)["tomcat1"][1]  # no python3: cannot test, says static
    cut = pf.judge_multicast({"tomcat1": "heard tomcat2 10.153.0.113\n", "tomcat2": outs["tomcat1"]},
                             ["tomcat1", "tomcat2"], "228.0.0.4", 45564)
    assert not cut["tomcat1"][1] and "did not finish" in cut["tomcat1"][2]


def test_clock_skew_against_this_machine_and_between_hosts():
    # `date +%s.%N` as printed, asked at this machine's 1764588000.00 and answered by .05
    ok = pf.judge_clocks({"a": (pf.parse_clock("1764588000.021458313\n"), 1764588000.0, 1764588000.05),
                          "b": (pf.parse_clock("1764588000.030005112\n"), 1764588000.0, 1764588000.05)})
    assert all(c[1] for c in ok.values()), ok
    skewed = pf.judge_clocks({"a": (pf.parse_clock("1764588000.021458313\n"), 1764588000.0, 1764588000.05),
                              "b": (pf.parse_clock("1764588007.530005112\n"), 1764588000.0, 1764588000.05)})
    assert not skewed["b"][1] and "+7.5 s from this machine" in skewed["b"][2] and "NTP" in skewed["b"][2]
    assert not skewed["a"][1] and "-7.5 s from b" in skewed["a"][2]  # in time here, but not with b
    # two hosts 1.5 s either side of this machine: each within 2 s of it, 3 s apart
    apart = pf.judge_clocks({"a": (1764588001.5, 1764588000.0, 1764588000.0),
                             "b": (1764587998.5, 1764588000.0, 1764588000.0)})
    assert not apart["a"][1] and "from b" in apart["a"][2]
    # a slow round trip widens what is allowed instead of failing
    assert pf.judge_clocks({"a": (1764588003.0, 1764588000.0, 1764588004.0)})["a"][1]
    assert not pf.judge_clocks({"a": (pf.parse_clock("date: invalid option\n"), 0.0, 0.1)})["a"][1]


def test_java_versions_against_the_tomcat_major():
    assert pf.parse_java_major('openjdk version "17.0.13" 2024-10-15') == 17
    assert pf.parse_java_major('openjdk version "11.0.25" 2024-10-15') == 11
    assert pf.parse_java_major('java version "1.8.0_412"') == 8
    f = parse_facts((DATA / "deployed-tomcat2.txt").read_text())
    old = dataclasses.replace(f, preflight={**f.preflight, "java": ['java version "1.8.0_412"']})
    what, ok, detail = pf.judge_java(old)
    assert not ok and "Java 8 is too old for Tomcat 10 (needs 11+)" in detail
    gone = dataclasses.replace(f, preflight={**f.preflight, "java": []})
    assert not pf.judge_java(gone)[1]


def test_jvm_routes_msm_and_nginx_accept(inv):
    text = (ROOT / "hosts.toml").read_text().replace('jvm_route = "tomcat2"', 'jvm_route = "tomcat-2"')
    dashed = parse_inventory(text, ROOT / "hosts.toml")
    assert pf.judge_route(dashed.host("tomcat2"), DELTA, dashed)[1]
    what, ok, detail = pf.judge_route(dashed.host("tomcat2"), MSM, dashed)
    assert not ok and 'MSM splits session ids at "-"' in detail and "[tomcat.tomcat2]" in detail


def test_not_enough_disk_for_the_packages():
    lines = sections("fresh-tomcat1.txt")["disk"]
    small = [" ".join(p[:3] + ["102400"] + p[4:]) for p in (l.split() for l in lines)]
    what, ok, detail = pf.judge_disk(small, installing=True)
    assert not ok and "100 MiB free on /var or /usr, 400 MiB needed for the packages" in detail
    assert pf.judge_disk(small, installing=False)[1]


def test_the_refusal_is_one_line(inv):
    report = pf.PreflightReport("delta", (pf.HostPreflight("tomcat2", "tomcat", "10.153.0.113",
                                                           (("ports", False, "tcp 4000 held"), ("disk", False, "x"))),))
    msg = pf.refusal(report)
    assert msg == "preflight: tomcat2: ports: tcp 4000 held (and 1 more: `tcsession preflight` shows them all); nothing was changed"


def test_the_table_and_json(inv):
    from tcsession import ui

    f = parse_facts((DATA / "port-held-tomcat2.txt").read_text() + (DATA / "deployed-tomcat2.txt").read_text()
                    .split("@@pf-resolve")[0])
    h = pf.judge_host(inv, inv.host("tomcat2"), f, DELTA, False, [("clock", True, "+0.002 s from this machine")])
    report = pf.PreflightReport("delta", (h,))
    lines = [t for t, _ in ui.render_preflight(report, 120)]
    assert lines[0] == "tcsession preflight: 1 hosts, mode delta" and lines[-1] == "PREFLIGHT FAILED"
    assert any(t.startswith("  FAIL ports: tcp 4000 (cluster receiver) is held by python3") for t in lines)
    assert any(t.startswith("  ok   clock: ") for t in lines)
    d = report.to_dict()
    assert d["ok"] is False and {c["check"] for c in d["hosts"][0]["checks"]} >= {"ports", "clock", "java", "disk"}


# nginx -v: Debian 12's package (read on the lab's nginx host), EPEL's for CentOS 7, a 1.0 build,
# mainline 1.29.6 (sticky route and drain); the output format is nginx's own ("nginx version: ...").
@pytest.mark.parametrize("line,ok,says", [
    ("nginx version: nginx/1.22.1", True, "routing by jvmRoute with a map"),
    ("nginx version: nginx/1.20.1", True, "nginx 1.20.1"),
    ("nginx version: nginx/1.0.15", False, "older than 1.1.4"),
    ("nginx version: nginx/1.29.6", True, "it has sticky route and drain"),
    ("nginx version: openresty/1.25.3.1", True, "version not recognised"),
])
def test_the_nginx_version(line, ok, says):
    what, passed, detail = pf.judge_nginx([line])
    assert what == "nginx" and passed is ok and says in detail, detail
    assert pf.judge_nginx(None)[1] and "not installed yet" in pf.judge_nginx([""])[2]


# SELinux on the RHEL family: getenforce's and getsebool's own output formats (no RHEL host can
# be had here, so these are captured texts, not a live host; Debian has no getenforce: nothing).
@pytest.mark.parametrize("lines,ok,says", [
    (["Enforcing", "httpd_can_network_connect --> off"], False, "setsebool -P httpd_can_network_connect 1"),
    (["Enforcing", "httpd_can_network_connect --> on"], True, "nginx may connect"),
    (["Permissive", "httpd_can_network_connect --> off"], True, "nothing enforced"),
    (["Disabled", "getsebool:  SELinux is disabled"], True, "nothing enforced"),
    ([], True, "no SELinux tools"),
])
def test_selinux_blocking_nginx_is_named_with_its_fix(lines, ok, says):
    what, passed, detail = pf.judge_selinux(lines)
    assert what == "selinux" and passed is ok and says in detail, detail


def test_the_nginx_host_gets_the_nginx_and_selinux_checks(inv):
    f = parse_facts((DATA.parent / "facts" / "deployed-nginx.txt").read_text())
    h = pf.judge_host(inv, inv.host("nginx"), f, DELTA, installing=False)
    assert {w for w, _, _ in h.checks} == {"host name", "ports", "nginx", "selinux", "disk"}

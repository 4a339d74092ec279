"""`upgrade`'s pure parts, in milliseconds: the packages' facts parsed from output captured on lab
hosts (tests/data/packages/: bookworm hosts on the older tomcat10, openjdk-17, memcached and nginx,
with bookworm-security's newer ones as candidates), what changes per host and what is refused,
the plan (THE rollout's UPGRADE order) from facts captured on deployed lab hosts, its rollback,
the restart's script, and status's notes. The lab proves it on hosts: tests/test_upgrade_lab.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tcsession import packages as P
from tcsession import status
from tcsession.errors import TcsessionError
from tcsession.facts import parse_facts, split_sections
from tcsession.inventory import parse_inventory
from tcsession.modes import DELTA
from tcsession.state import FileRecord, Manifest, Record
from tcsession.steps import RecordUpgrade, RestartTomcat, RestoreFiles, UpgradeService
from tcsession.upgrade import parse_only, plan_rollback, plan_upgrade

ROOT = Path(__file__).resolve().parent.parent
PKG = Path(__file__).parent / "data" / "packages"
FACTS = Path(__file__).parent / "data" / "facts"
OLD, NEW = "10.1.55-1~deb12u1", "10.1.60-1~deb12u1"
ALL = frozenset(P.GROUPS)


def captured(name: str) -> P.HostPackages:
    return P.parse_packages(split_sections((PKG / f"{name}.txt").read_text()))


@pytest.fixture
def tomcat_pkgs():
    return captured("bookworm-tomcat-10.1.55")


@pytest.fixture
def nginx_pkgs():
    return captured("bookworm-nginx-deb12u9")


@pytest.fixture
def inv():
    return parse_inventory((ROOT / "hosts.toml").read_text(), ROOT / "hosts.toml")


@pytest.fixture
def deployed():
    facts = {n: parse_facts((FACTS / f"deployed-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}
    for n in ("tomcat1", "tomcat2"):  # the captured hosts' memcached package (msm's), as on the upgrade lab's
        facts[n] = dataclasses.replace(facts[n], packages={**facts[n].packages, "memcached": "1.6.18-1"})
    return facts


def test_the_captured_packages_are_read_with_their_candidates_and_origins(tomcat_pkgs, nginx_pkgs):
    p = tomcat_pkgs.packages
    assert sorted(p) == ["libtomcat10-java", "memcached", "openjdk-17-jre-headless", "tomcat10", "tomcat10-common"]
    assert (p["tomcat10"].installed, p["tomcat10"].candidate, p["tomcat10"].security) == (OLD, NEW, True)
    assert p["tomcat10"].available(OLD) and p["tomcat10"].available(NEW) and not p["tomcat10"].available("11.0.15-1")
    assert p["openjdk-17-jre-headless"].candidate == "17.0.21.1+2-1~deb12u1"
    assert p["tomcat10"].installed_at == 1796527394
    assert set(tomcat_pkgs.running) == {"tomcat10", "memcached"}
    assert tomcat_pkgs.running["tomcat10"].started == 1796527425 - 15
    assert ("tomcat10", OLD, NEW, True) in tomcat_pkgs.pending
    assert nginx_pkgs.packages["nginx"].candidate == "1.22.1-9+deb12u12" and nginx_pkgs.packages["nginx"].security
    assert set(nginx_pkgs.running) == {"nginx"}


def test_a_package_installed_after_its_service_started_is_a_restart_owed(tomcat_pkgs):
    assert tomcat_pkgs.restart_owed("tomcat10", "tomcat") is None  # started after the install
    jre = dataclasses.replace(tomcat_pkgs.packages["openjdk-17-jre-headless"], installed_at=1796527500)
    later = dataclasses.replace(tomcat_pkgs, packages={**tomcat_pkgs.packages, jre.name: jre})
    assert later.restart_owed("tomcat10", "tomcat") == "openjdk-17-jre-headless installed after it started"
    assert later.restart_owed("memcached", "memcached") is None  # not one of memcached's packages
    mapped = dataclasses.replace(tomcat_pkgs, running={**tomcat_pkgs.running, "memcached": dataclasses.replace(
        tomcat_pkgs.running["memcached"], deleted=("/usr/lib/x86_64-linux-gnu/libevent-2.1.so.7.0.1",))})
    assert "still maps replaced files" in mapped.restart_owed("memcached", "memcached")
    assert later.restart_owed("tomcat9", "tomcat") is None  # does not run


def test_each_host_gets_its_cluster_packages_to_their_candidates(tomcat_pkgs, nginx_pkgs):
    hu = P.host_upgrade("tomcat1", "tomcat", tomcat_pkgs, ALL, {}, "tomcat10", True)
    assert [n for n, _, _ in hu.by_unit["tomcat"]] == ["libtomcat10-java", "openjdk-17-jre-headless", "tomcat10",
                                                       "tomcat10-common"]
    assert hu.by_unit["memcached"] == (("memcached", "1.6.18-1", "1.6.18-1+deb12u1"),)
    only = P.host_upgrade("tomcat1", "tomcat", tomcat_pkgs, frozenset({"java"}), {}, "tomcat10", True)
    assert only.changes == (("openjdk-17-jre-headless", "17.0.19+10-1~deb12u2", "17.0.21.1+2-1~deb12u1"),)
    no_memcached = P.host_upgrade("tomcat1", "tomcat", tomcat_pkgs, ALL, {}, "tomcat10", False)
    assert "memcached" not in no_memcached.by_unit
    n = P.host_upgrade("nginx", "nginx", nginx_pkgs, ALL, {}, None, False)
    assert n.by_unit == {"nginx": (("nginx", "1.22.1-9+deb12u9", "1.22.1-9+deb12u12"),
                                   ("nginx-common", "1.22.1-9+deb12u9", "1.22.1-9+deb12u12"))}
    pinned = P.host_upgrade("tomcat1", "tomcat", tomcat_pkgs, frozenset({"tomcat"}), {"tomcat10": OLD}, "tomcat10", True)
    assert "tomcat10" not in [n for n, _, _ in pinned.changes]  # pinned to what it has


def test_a_tomcat_major_change_or_a_version_not_carried_is_refused(tomcat_pkgs):
    with pytest.raises(TcsessionError, match=r"tomcat1: tomcat10 10.1.55-1~deb12u1 -> 11.0.15-1 is not a patch but a "
                                             r"change of Tomcat line \(10.1 -> 11.0\).*Nothing was changed"):
        P.host_upgrade("tomcat1", "tomcat", tomcat_pkgs, ALL, {"tomcat10": "11.0.15-1"}, "tomcat10", True)
    with pytest.raises(TcsessionError, match=r"tomcat10 10.1.59-1 is not available .*it has: 10.1.60-1~deb12u1, "
                                             r"10.1.55-1~deb12u1\); nothing was changed"):
        P.host_upgrade("tomcat1", "tomcat", tomcat_pkgs, ALL, {"tomcat10": "10.1.59-1"}, "tomcat10", True)
    assert P.unknown_pins({"tomcat11": "11.0.1", "tomcat10": NEW}, {"t": tomcat_pkgs}) == ["tomcat11"]
    assert P.major_minor("1:9.0.87-1.el9") == "9.0" and P.major_minor(NEW) == "10.1"


def test_the_options_refuse_what_they_cannot_mean():
    with pytest.raises(TcsessionError, match="--only jdk: not a group.*java, memcached, nginx, tomcat"):
        parse_only("tomcat,jdk")
    assert parse_only(None) == ALL and parse_only("java, nginx") == {"java", "nginx"}
    with pytest.raises(TcsessionError, match="--to 'tomcat10': expected NAME=VERSION"):
        P.parse_pins("tomcat10")
    assert P.parse_pins("tomcat10=10.1.60-1~deb12u1,memcached=1.6.18-1") == {"tomcat10": NEW, "memcached": "1.6.18-1"}


def upgrade_changes(inv, tomcat_pkgs, nginx_pkgs, only=ALL):
    out = {t.name: P.host_upgrade(t.name, "tomcat", tomcat_pkgs, only, {}, "tomcat10", True) for t in inv.tomcats}
    out["nginx"] = P.host_upgrade("nginx", "nginx", nginx_pkgs, only, {}, None, False)
    return out


def test_the_plan_records_then_tomcats_one_at_a_time_with_memcached_then_nginx_last(inv, deployed, tomcat_pkgs,
                                                                                      nginx_pkgs):
    p = plan_upgrade(inv, DELTA, deployed, upgrade_changes(inv, tomcat_pkgs, nginx_pkgs), "20261206T000000Z-abcdef", "t")
    kinds = [(type(s).__name__, s.host) for s in p.steps]
    assert kinds[:3] == [("RecordUpgrade", "nginx"), ("RecordUpgrade", "tomcat1"), ("RecordUpgrade", "tomcat2")]
    assert kinds[3:6] == [("RestartTomcat", "tomcat1"), ("RestartTomcat", "tomcat2"), ("UpgradeService", "nginx")]
    assert all(k == "CheckPorts" for k, _ in kinds[6:])
    r1, r2 = p.steps[3], p.steps[4]
    assert (r1.wave, r2.wave) == (1, 2) and r1.drain is not None and r1.waits_for_state and r1.members == 1
    assert ("tomcat10", OLD, NEW) in r1.upgrades and ("memcached", "1.6.18-1", "1.6.18-1+deb12u1") in r1.upgrades
    assert r1.package_manager == "apt-get" and [u for u, _ in r1.also] == ["memcached"]
    assert "memcached restarted meanwhile" in r1.describe()
    record = p.steps[1].record
    assert record.kind == "upgrade" and ("tomcat10", OLD, NEW) in record.packages_changed
    assert Manifest.from_json(record.to_json()) == record  # what rollback reads back
    assert p.steps[5].unit == "nginx" and p.steps[5].port == ("*", 80)


def test_without_memcached_changes_the_tomcats_go_in_the_inventorys_waves(inv, deployed, tomcat_pkgs, nginx_pkgs):
    four = parse_inventory((ROOT / "hosts.toml").read_text() + "".join(
        f'\n[tomcat.tomcat{i}]\naddress = "10.153.0.{111 + i}"\n' for i in (3, 4)), ROOT / "hosts.toml")
    facts = {**deployed, "tomcat3": deployed["tomcat2"], "tomcat4": deployed["tomcat2"]}
    java = {t.name: P.host_upgrade(t.name, "tomcat", tomcat_pkgs, frozenset({"java"}), {}, "tomcat10", True)
            for t in four.tomcats}
    p = plan_upgrade(four, DELTA, facts, java, "20261206T000000Z-abcdef", "t")
    assert [s.wave for s in p.steps if isinstance(s, RestartTomcat)] == [1, 2, 2, 3]  # the first alone, then halves
    memcached = {t.name: P.host_upgrade(t.name, "tomcat", tomcat_pkgs, frozenset({"memcached"}), {}, "tomcat10", True)
                 for t in four.tomcats}
    p = plan_upgrade(four, DELTA, facts, memcached, "20261206T000000Z-abcdef", "t")
    assert [s.wave for s in p.steps if isinstance(s, RestartTomcat)] == [1, 2, 3, 4]  # memcached: one host at a time


def test_the_restart_installs_while_stopped_and_starts_only_what_the_package_did_not(inv, deployed, tomcat_pkgs,
                                                                                    nginx_pkgs):
    p = plan_upgrade(inv, DELTA, deployed, upgrade_changes(inv, tomcat_pkgs, nginx_pkgs), "20261206T000000Z-abcdef", "t")
    script = p.steps[3].script()
    at = [script.index(s) for s in ("systemctl stop tomcat10", "p0=$(systemctl show -p MainPID memcached",
                                    "since=$(date +%s)", "apt-get install", "then systemctl restart memcached",
                                    "{ systemctl is-active -q tomcat10 || systemctl start tomcat10; }")]
    assert at == sorted(at), script
    assert "tomcat10=10.1.60-1~deb12u1" in script and "memcached=1.6.18-1+deb12u1" in script
    assert "--force-confold" in script and "UCF_FORCE_CONFFOLD=1" in script
    assert "systemctl restart tomcat10" not in script
    nginx = p.steps[5].script()
    assert "nginx=1.22.1-9+deb12u12" in nginx and "systemctl restart nginx" in nginx  # if its package did not
    assert "last" in p.steps[5].why and "restart" in p.steps[5].why


def test_nothing_to_upgrade_is_an_empty_plan_and_a_restart_owed_alone_restarts_drained(inv, deployed, tomcat_pkgs,
                                                                                      nginx_pkgs):
    none = {n: P.HostUpgrade(n, {}, {}) for n in ("nginx", "tomcat1", "tomcat2")}
    assert plan_upgrade(inv, DELTA, deployed, none, "20261206T000000Z-abcdef", "t").empty
    owed = dict(none, tomcat2=P.HostUpgrade("tomcat2", {}, {"tomcat": "openjdk-17-jre-headless installed after it started"}))
    p = plan_upgrade(inv, DELTA, deployed, owed, "20261206T000000Z-abcdef", "t")
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [(s.host, s.upgrades, s.drain is not None) for s in restarts] == [("tomcat2", (), True)]
    assert [s.record.packages_changed for s in p.steps if isinstance(s, RecordUpgrade)] == [()]


def record(host: str, changed) -> Record:
    return Record(host, Manifest("20261206T000000Z-abcdef", "delta", "t", kind="upgrade", packages_changed=changed))


def test_rolling_back_an_upgrade_installs_the_recorded_versions_then_marks_it(inv, deployed, tomcat_pkgs, nginx_pkgs):
    now = P.HostPackages({n: dataclasses.replace(p, installed=p.candidate) for n, p in tomcat_pkgs.packages.items()},
                         tomcat_pkgs.running)
    changed = (("tomcat10", OLD, NEW), ("memcached", "1.6.18-1", "1.6.18-1+deb12u1"))
    records = {t: record(t, changed) for t in ("tomcat1", "tomcat2")}
    p = plan_rollback(inv, deployed, {"tomcat1": now, "tomcat2": now, "nginx": nginx_pkgs}, records,
                      "20261206T010000Z-fedcba", "t")
    assert p.kind == "rollback 20261206T000000Z-abcdef"
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [s.upgrades for s in restarts] == [(("tomcat10", NEW, OLD), ("memcached", "1.6.18-1+deb12u1", "1.6.18-1"))] * 2
    assert all(s.verb == "downgrade" and s.also for s in restarts) and [s.wave for s in restarts] == [1, 2]
    assert not any(isinstance(s, UpgradeService) for s in p.steps)
    marks = [s for s in p.steps if isinstance(s, RestoreFiles)]
    assert [s.host for s in marks] == ["tomcat1", "tomcat2"] and p.steps[-2:] == tuple(marks)
    assert not any(isinstance(s, RecordUpgrade) for s in p.steps)
    gone = P.HostPackages({n: dataclasses.replace(p, installed=p.candidate, versions=((p.candidate, "security"),))
                           for n, p in tomcat_pkgs.packages.items()}, tomcat_pkgs.running)
    with pytest.raises(TcsessionError, match=r"tomcat1: the package sources no longer carry tomcat10 10.1.55-1~deb12u1"):
        plan_rollback(inv, deployed, {"tomcat1": gone, "tomcat2": gone, "nginx": nginx_pkgs}, records, "x", "t")


def test_a_record_without_kind_is_a_deploy():
    m = Manifest("20261206T000000Z-abcdef", "delta", "t", files=(FileRecord("/a", False, None, "x"),))
    back = Manifest.from_json(m.to_json().replace('"kind": "deploy",', ""))
    assert back.kind == "deploy" and back.packages_changed == ()


def test_status_notes_the_updates_and_the_restarts_owed(inv, deployed, tomcat_pkgs):
    jre = dataclasses.replace(tomcat_pkgs.packages["openjdk-17-jre-headless"], installed_at=1796527500)
    f = dataclasses.replace(deployed["tomcat1"], upgrades=dataclasses.replace(
        tomcat_pkgs, packages={**tomcat_pkgs.packages, jre.name: jre}))
    notes = dict(status.judge_packages(inv, inv.host("tomcat1"), f))
    assert "tomcat10 10.1.55-1~deb12u1 -> 10.1.60-1~deb12u1 (security)" in notes["updates"]
    assert "5 security update(s)" in notes["updates"] and "upgrade" in notes["updates"]
    assert notes["restart owed"].startswith("tomcat10 runs older code than is installed: openjdk-17-jre-headless")
    assert status.judge_packages(inv, inv.host("tomcat1"), dataclasses.replace(f, upgrades=None)) == ()


def test_the_json_of_upgrade_names_its_id_and_every_step(inv, deployed, tomcat_pkgs, nginx_pkgs):
    from tcsession import contract

    p = plan_upgrade(inv, DELTA, deployed, upgrade_changes(inv, tomcat_pkgs, nginx_pkgs), "20261206T000000Z-abcdef", "t")
    d = contract.upgrade_json("20261206T000000Z-abcdef", [p], False)
    assert (d["schema"], d["ok"], d["exit"], d["changed"]) == ("tcsession.upgrade/1", True, 0, True)
    assert len(d["steps"]) == len(p.steps) and d["steps"][3]["host"] == "tomcat1"
    dry = contract.upgrade_json(None, [p], True)
    assert dry["dry_run"] and dry["upgrade_id"] is None and not dry["changed"]


def test_security_adds_the_hosts_other_pending_security_updates_to_its_main_service(tomcat_pkgs):
    more = dataclasses.replace(tomcat_pkgs, pending=tomcat_pkgs.pending + (
        ("libssl3", "3.0.17-1~deb12u2", "3.0.18-1~deb12u1", True), ("tzdata", "2025a-0+deb12u1", "2025b-0+deb12u1", False)))
    plain = P.host_upgrade("tomcat1", "tomcat", more, ALL, {}, "tomcat10", True)
    assert "libssl3" not in [n for n, _, _ in plain.changes]
    hu = P.host_upgrade("tomcat1", "tomcat", more, ALL, {}, "tomcat10", True, security=True)
    assert ("libssl3", "3.0.17-1~deb12u2", "3.0.18-1~deb12u1") in hu.by_unit["tomcat"]  # inside the drained restart
    assert "tzdata" not in [n for n, _, _ in hu.changes]  # not a security update
    assert [n for n, _, _ in hu.changes].count("tomcat10") == 1  # a cluster package once


def test_a_host_without_apt_get_is_refused_before_any_change(inv, deployed, tomcat_pkgs):
    from tcsession.upgrade import check_apt

    rhel = {**deployed, "tomcat2": dataclasses.replace(deployed["tomcat2"], package_manager="dnf")}
    changes = {"tomcat1": P.HostUpgrade("tomcat1", {}, {}),
               "tomcat2": P.host_upgrade("tomcat2", "tomcat", tomcat_pkgs, ALL, {}, "tomcat10", True)}
    with pytest.raises(TcsessionError, match=r"upgrade: rolls apt-get hosts .*not yet tomcat2 \(dnf\).*nothing was changed"):
        check_apt(inv, rhel, changes)
    check_apt(inv, rhel, {**changes, "tomcat2": P.HostUpgrade("tomcat2", {}, {})})  # nothing to do there: fine

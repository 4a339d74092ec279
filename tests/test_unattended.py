"""The distribution's automatic upgraders (tcsession.unattended): the parser on output captured
from a bookworm lab host (tests/data/automatic, README there), the judge preflight and status
show, the hold files and what deploy plans with `[packages] automatic`. The files' effect on real
hosts (apt-config, unattended-upgrade --dry-run, needrestart's evaluated configuration, deploy
and rollback): tests/test_preflight_lab.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tcsession import contract, unattended, ui
from tcsession import plan as planning
from tcsession.errors import TcsessionError
from tcsession.facts import FileFact, parse_facts
from tcsession.inventory import parse_inventory
from tcsession.modes import DELTA, MSM
from tcsession.preflight import HostPreflight, PreflightReport
from tcsession.steps import RestartTomcat, WriteFiles

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "automatic"
FACTS = Path(__file__).parent / "data" / "facts"


def captured(name: str) -> unattended.Upgraders:
    lines = (DATA / f"bookworm-{name}.txt").read_text().splitlines()
    assert lines[0] == "@@automatic"
    return unattended.parse_upgraders(lines[1:])


def inventory(automatic: str | None = None):
    text = (ROOT / "hosts.toml").read_text() + (f'\n[packages]\nautomatic = "{automatic}"\n' if automatic else "")
    return parse_inventory(text, ROOT / "hosts.toml")


# --------------------------------------------------------------------------- parsing


def test_the_exposed_host_has_unattended_upgrades_on_and_needrestart_automatic():
    up = captured("exposed")
    assert up.read and up.packages == {"needrestart": "3.6-4+deb12u4", "unattended-upgrades": "2.9.1+nmu3"}
    assert up.unattended and up.apt == {"APT::Periodic::Unattended-Upgrade": "1"} and up.blacklist == ()
    assert up.timers == {"apt-daily-upgrade.timer": "enabled"}
    assert up.cluster == ("libtomcat10-java", "memcached", "openjdk-17-jre-headless", "tomcat10", "tomcat10-common")
    assert up.needrestart and up.needrestart_mode == "a" and up.needrestart_error == ""
    assert up.needrestart_units["tomcat10"] is True and up.needrestart_units["memcached"] is True


def test_the_held_host_has_tcsessions_blacklist_and_override():
    up = captured("held")
    assert up.blacklist == unattended.patterns("tomcat", memcached=True)
    assert up.needrestart_units == {"tomcat11": True, "tomcat10": False, "tomcat9": True, "tomcat": True,
                                    "nginx": True, "memcached": False}
    assert all(unattended.held(p, up.blacklist) for p in up.cluster)


def test_a_fresh_host_and_needrestarts_default_mode():
    fresh = captured("fresh")
    assert fresh.read and not fresh.unattended and not fresh.needrestart and fresh.cluster == ()
    default = captured("default-mode")
    assert default.needrestart_mode == "i" and default.unattended


def test_a_needrestart_configuration_that_does_not_evaluate_is_reported():
    up = captured("broken")
    assert up.needrestart_error.startswith("Error parsing /etc/needrestart/conf.d/zz-broken.conf: syntax error")
    check = unattended.judge("tomcat", up, "tomcat10", True)
    assert check[1] and check[2].startswith("warning: ") and "did not evaluate" in check[2]


def test_unattended_upgrades_is_off_when_any_of_its_switches_is_off():
    on = captured("exposed")
    assert not dataclasses.replace(on, apt={**on.apt, "APT::Periodic::Enable": "0"}).unattended
    assert not dataclasses.replace(on, apt={"APT::Periodic::Unattended-Upgrade": "0"}).unattended
    assert not dataclasses.replace(on, timers={"apt-daily-upgrade.timer": "disabled"}).unattended
    assert not dataclasses.replace(on, packages={"needrestart": "3.6"}).unattended
    assert dataclasses.replace(on, apt={"APT::Periodic::Unattended-Upgrade": "always"}).unattended


def test_apt_lines_with_escaped_quotes_and_a_section_never_read():
    up = unattended.parse_upgraders(['apt Unattended-Upgrade::Package-Blacklist:: "a\\"b$";',
                                     'apt Unattended-Upgrade::Package-Blacklist "";', "garbage", ""])
    assert up.blacklist == ('a"b$',)
    assert unattended.parse_upgraders(None) == unattended.Upgraders()
    assert not unattended.Upgraders().read


def test_the_rhel_family_lines_as_the_script_prints_them():
    """No RHEL lab host: the lines automatic_script's rpm branch prints, written by hand."""
    up = unattended.parse_upgraders([
        "pkg dnf-automatic 4.14.0-9.el9 ii", "cluster tomcat", "cluster java-17-openjdk-headless",
        "timer dnf-automatic.timer enabled", "timer dnf-automatic-install.timer disabled",
        "timer dnf5-automatic.timer ", "timer yum-cron.service ",
        "conf /etc/dnf/automatic.conf apply_updates = yes"])
    assert up.apply_updates == {"/etc/dnf/automatic.conf": True}
    assert up.rpm_upgraders() == ["dnf-automatic (dnf-automatic.timer, apply_updates = yes in /etc/dnf/automatic.conf)"]
    what, ok, detail = unattended.judge("tomcat", up, "tomcat", False, "hold", "dnf")
    assert ok and detail.startswith("warning: dnf-automatic") and "excludepkgs=" in detail
    assert "cannot hold them without editing your file" in detail
    off = dataclasses.replace(up, apply_updates={"/etc/dnf/automatic.conf": False})
    assert unattended.judge("tomcat", off, "tomcat", False, "warn", "dnf")[2] == "no automatic upgrader installs updates"
    forced = dataclasses.replace(off, timers={"dnf-automatic-install.timer": "enabled"})
    assert forced.rpm_upgraders() == ["dnf-automatic (dnf-automatic-install.timer)"]


# --------------------------------------------------------------------------- judging


def test_the_judge_names_each_upgrader_the_services_and_the_fix():
    what, ok, detail = unattended.judge("tomcat", captured("exposed"), "tomcat10", True)
    assert what == "automatic upgrades" and ok  # a warning, never a failure
    assert detail.startswith("warning: unattended-upgrades (apt-daily-upgrade.timer) upgrades libtomcat10-java, "
                             "memcached, openjdk-17-jre-headless, tomcat10, tomcat10-common, whose package scripts "
                             "restart tomcat10, memcached")
    assert "needrestart ($nrconf{restart} = 'a') restarts tomcat10, memcached" in detail
    assert detail.endswith(unattended.FIX)
    # needrestart's default mode only lists under unattended-upgrades: it is not named
    default = unattended.judge("tomcat", captured("default-mode"), "tomcat10", True)[2]
    assert default.startswith("warning: unattended-upgrades") and "needrestart" not in default
    held = unattended.judge("tomcat", captured("held"), "tomcat10", True, "hold")
    assert held == ("automatic upgrades", True, "unattended-upgrades on, the cluster's packages held; "
                                                "needrestart ($nrconf{restart} = 'a') leaves tomcat10, memcached alone")
    assert unattended.judge("tomcat", captured("fresh"), None, False) == (
        "automatic upgrades", True, "no automatic upgrader enabled")
    # "hold" set but not deployed yet: the fix is the deploy
    assert unattended.judge("tomcat", captured("exposed"), "tomcat10", True, "hold")[2].endswith(
        "deploy to write tcsession's hold files")


def test_a_blacklist_of_the_operators_own_counts_as_unattended_upgrades_does():
    up = dataclasses.replace(captured("default-mode"), blacklist=("tomcat10", "libtomcat10", "openjdk", "memcached"))
    assert unattended.judge("tomcat", up, "tomcat10", True)[2].startswith("unattended-upgrades on")
    partial = dataclasses.replace(up, blacklist=("tomcat10$",))
    assert "upgrades libtomcat10-java, memcached, openjdk-17-jre-headless, tomcat10-common," in \
        unattended.judge("tomcat", partial, "tomcat10", True)[2]


def test_the_hold_entries_are_anchored_and_match_what_they_should():
    """re.match, as unattended-upgrades (is_pkgname_in_blacklist): anchored at the start only, so
    each entry ends in $."""
    tomcat, nginx = unattended.patterns("tomcat", memcached=True), unattended.patterns("nginx")
    assert all(rx.endswith("$") for rx in tomcat + nginx)
    for name in ("tomcat10", "tomcat10-common", "libtomcat10-java", "tomcat9", "tomcat", "openjdk-17-jre-headless",
                 "openjdk-21-jre", "default-jre-headless", "memcached"):
        assert unattended.held(name, tomcat), name
    for name in ("nginx", "nginx-common", "nginx-core", "libnginx-mod-http-geoip"):
        assert unattended.held(name, nginx), name
    for name in ("tomcatjss", "libtomcat10-java-doc", "openjdk-17-doc", "memcachedb", "python3-memcache", "nginx2",
                 "libc6", "openssl"):
        assert not unattended.held(name, tomcat + nginx), name
    assert unattended.patterns("tomcat") == unattended.TOMCAT_PATTERNS  # memcached only where it runs


def test_the_files_rendered():
    apt = unattended.render_apt_hold(unattended.patterns("nginx")).decode()
    assert apt.startswith("// Managed by tcsession") and apt.endswith(
        'Unattended-Upgrade::Package-Blacklist {\n    "nginx(-[a-z]+)?$";\n    "libnginx-mod-.+$";\n};\n')
    nr = unattended.render_needrestart(("tomcat10", "memcached")).decode()
    assert nr.endswith("$nrconf{override_rc}{qr(^tomcat10\\.service$)} = 0;\n"
                       "$nrconf{override_rc}{qr(^memcached\\.service$)} = 0;\n")
    with pytest.raises(TcsessionError):
        unattended.render_apt_hold(("nginx",))  # unanchored: a bug


# --------------------------------------------------------------------------- the inventory, plan, output


def test_the_setting_and_a_bad_value():
    assert inventory().automatic == "warn" and inventory("hold").automatic == "hold"
    with pytest.raises(TcsessionError) as e:
        inventory("off")
    message = str(e.value)
    assert "hosts.toml" in message and "[packages]" in message and "automatic" in message
    assert '"warn", "hold"' in message and len(message.splitlines()) == 1, message


@pytest.fixture
def deployed():
    return {n: parse_facts((FACTS / f"deployed-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}


def with_upgraders(f, name: str, files=None):
    files = {p: FileFact(p, data, "644", "root:root") for p, data in (files or {}).items()}
    return dataclasses.replace(f, automatic=captured(name), files={**f.files, **files})


def written(p) -> dict[str, dict[str, bytes | None]]:
    return {s.host: {c.path: c.after for c in s.changes} for s in p.steps if isinstance(s, WriteFiles)}


def test_hold_plans_tcsessions_files_and_restarts_nothing(deployed):
    facts = {**deployed, "tomcat1": with_upgraders(deployed["tomcat1"], "exposed")}
    p = planning.plan(inventory("hold"), facts, DELTA)
    files = written(p)
    tomcat_hold = unattended.render_apt_hold(unattended.TOMCAT_PATTERNS)
    assert files["tomcat1"] == {unattended.APT_HOLD: tomcat_hold,
                                unattended.NEEDRESTART_CONF: unattended.render_needrestart(("tomcat10",))}
    assert files["tomcat2"] == {unattended.APT_HOLD: tomcat_hold}  # no needrestart there
    assert files["nginx"] == {unattended.APT_HOLD: unattended.render_apt_hold(unattended.NGINX_PATTERNS)}
    assert not [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [type(s).__name__ for s in p.steps if not isinstance(s, WriteFiles) and not s.check_only] == []
    # the manifest records them (rollback restores from it): new files, nothing before
    manifest = next(s for s in p.steps if isinstance(s, WriteFiles) and s.host == "tomcat1").manifest
    assert {r.path for r in manifest.files} == {unattended.APT_HOLD, unattended.NEEDRESTART_CONF}


def test_hold_with_msm_holds_memcached_and_a_second_run_plans_nothing(deployed):
    facts = {**deployed, "tomcat1": with_upgraders(deployed["tomcat1"], "exposed")}
    inv = inventory("hold")
    tomcat1 = planning.plan_hold(inv, inv.host("tomcat1"), facts["tomcat1"], MSM)
    assert [c.after for c in tomcat1] == [unattended.render_apt_hold(unattended.patterns("tomcat", True)),
                                          unattended.render_needrestart(("tomcat10", "memcached"))]
    assert planning.plan(inv, held_by_tcsession(inv, facts), DELTA).empty


def held_by_tcsession(inv, facts):
    """Each host with needrestart, unattended-upgrades and tcsession's hold files on it."""
    return {n: with_upgraders(f, "held", {c.path: c.after for c in
                                          planning.plan_hold(inv, inv.host(n), with_upgraders(f, "held"), DELTA)
                                          if c is not None})
            for n, f in facts.items()}


def test_warn_removes_tcsessions_files_from_an_earlier_hold(deployed):
    p = planning.plan(inventory("warn"), held_by_tcsession(inventory("hold"), deployed), DELTA)
    assert written(p)["tomcat1"] == {unattended.APT_HOLD: None, unattended.NEEDRESTART_CONF: None}
    assert written(p)["nginx"] == {unattended.APT_HOLD: None, unattended.NEEDRESTART_CONF: None}
    assert not [s for s in p.steps if isinstance(s, RestartTomcat)]


def test_hold_writes_nothing_on_another_family(deployed):
    inv = inventory("hold")
    rhel = dataclasses.replace(deployed["tomcat1"], package_manager="dnf")
    assert [c for c in planning.plan_hold(inv, inv.host("tomcat1"), rhel, DELTA) if c is not None] == []


def test_the_facts_answer_of_a_held_host_and_the_check_id(deployed):
    f = parse_facts((DATA / "bookworm-held-facts.txt").read_text())
    assert f.automatic.unattended and f.automatic.needrestart_units["tomcat10"] is False
    assert f.content(unattended.APT_HOLD) == unattended.render_apt_hold(unattended.patterns("tomcat", True))
    inv = inventory()
    assert contract.check_id("automatic upgrades", "tomcat", inv) == "packages.automatic"
    check = unattended.check(inv.host("tomcat1"), with_upgraders(deployed["tomcat1"], "exposed"))
    report = PreflightReport("delta", (HostPreflight("tomcat1", "tomcat", "10.0.0.1", (check,)),))
    j = contract.preflight_json(report, inv)
    assert j["ok"] and j["hosts"][0]["checks"][0] | {"detail": ""} == {
        "id": "packages.automatic", "check": "automatic upgrades", "ok": True, "detail": "", "warning": True}
    lines = [t for t, _ in ui.render_preflight(report, width=10**6)]
    assert lines[2].startswith("  warn automatic upgrades: unattended-upgrades (apt-daily-upgrade.timer)")
    assert lines[-1] == "preflight passed"
    # a capture older than the section: no check at all
    assert unattended.check(inv.host("tomcat1"), deployed["tomcat1"]) is None


def test_status_shows_one_line_per_host_warn_or_ok(deployed):
    from tcsession import status

    inv = inventory()
    hosts = (status.judge_nginx(inv, inv.nginx, with_upgraders(deployed["nginx"], "fresh"), "delta"),
             status.judge_tomcat(inv, inv.host("tomcat1"), with_upgraders(deployed["tomcat1"], "exposed"), "delta"))
    report = status.Report(hosts, "delta")
    lines = [t for t, _ in ui.render_status(report, width=10**6)]
    assert [l for l in lines if "automatic upgrades" in l] == [
        "  ok   automatic upgrades: no automatic upgrader enabled",
        "  warn automatic upgrades: " + hosts[1].checks[-1][2][len("warning: "):]]
    assert not [p for h in hosts for p in h.problems if "automatic" in p]  # never a problem

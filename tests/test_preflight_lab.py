"""inv preflight on real hosts (bookworm): passes on fresh hosts (tests/test_lab.py, on its
fresh lab: test_preflight_passes_on_fresh_hosts) and on deployed hosts (here: the shared cluster
of conftest, put back at the module's end); the deploy runs it first (a held port stops it);
and each check that can be provoked on a lab host fails: a host name resolving
to 127.0.1.1, a port held by another process (python3 -m http.server on the receiver port:
the deploy then stops with nothing changed), multicast blocked towards one host (the lab
bridge's flooding off on its port; inside the hosts there is no nftables/iptables and no tc
qdisc, and the interface's multicast flag off did not block it). With TCSESSION_CAPTURE=<dir> the
raw outputs are written there (tests/data/preflight/ came from such a run)."""

from __future__ import annotations

import json
import os
import sys
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, LabHandle, add_settings, host_state, shared_cluster_for_module, variant_inventory
from tcsession import facts as factsmod
from tcsession import preflight as pf
from tcsession import shell, status, unattended
from tcsession.deploy import deploy
from tcsession.errors import TcsessionError
from tcsession.inventory import load_inventory
from tcsession.remote import Remote
from tcsession.rollback import rollback
from tcsession.steps import RestartTomcat

pytestmark = pytest.mark.lab



@pytest.fixture(scope="module")
def lab(shared_cluster, tmp_path_factory):
    yield from shared_cluster_for_module(shared_cluster, tmp_path_factory, "pf")


def capture(name: str, text: str) -> None:
    where = os.environ.get("TCSESSION_CAPTURE")
    if where:
        Path(where, name).write_text(text)


def checks(report, host: str) -> dict:
    h = next(h for h in report.hosts if h.name == host)
    return {what: (ok, detail) for what, ok, detail in h.checks}


def test_deployed_hosts_pass(lab):
    """Fresh hosts: tests/test_lab.py::test_preflight_passes_on_fresh_hosts."""
    report = pf.preflight(lab.inv, "delta")
    assert report.ok, report.problems
    c = checks(report, "tomcat2")
    assert c["java"] == (True, "Java 17 for Tomcat 10") and c["ports"][0]
    assert c["multicast"] == (True, "228.0.0.4:45564 heard from 1 peer(s)")
    with Remote(lab.inv) as r:
        capture("deployed-tomcat2.txt", r.run(lab.inv.host("tomcat2"), factsmod.deploy_script() + shell.preflight_facts_script()).stdout)


def test_a_port_held_by_another_process_stops_the_deploy_with_nothing_changed(lab):
    t2 = lab.inv.host("tomcat2")
    lab.check("tomcat2", "systemctl stop tomcat10 && (setsid timeout 120 python3 -m http.server 4000 "
              f"--bind {t2.address} >/dev/null 2>&1 & echo $! > /tmp/tcsh-httpd.pid) && "
              "for i in $(seq 1 100); do ss -Hntl | grep -q ':4000 ' && exit 0; sleep 0.1; done; exit 1")
    try:
        before = lab.check("tomcat2", "sha256sum /etc/tomcat10/server.xml")
        report = pf.preflight(lab.inv, "delta")
        ok, detail = checks(report, "tomcat2")["ports"]
        assert not ok and "tcp 4000 (cluster receiver) is held by python3" in detail, detail
        with Remote(lab.inv) as rem:
            capture("port-held-tomcat2.txt", rem.run(t2, shell.preflight_facts_script()).stdout)
        changed = lab.tmp / "changed.toml"
        changed.write_text(add_settings(lab.inv_path.read_text(), "[delta]\nchannel_send_options = 2\n"))
        with pytest.raises(TcsessionError) as e:
            deploy(load_inventory(changed), "delta", quiet=True)
        assert str(e.value).startswith("preflight: tomcat2: ports: tcp 4000 (cluster receiver) is held by python3")
        assert "nothing was changed" in str(e.value)
        assert lab.check("tomcat2", "sha256sum /etc/tomcat10/server.xml") == before
    finally:
        lab.check("tomcat2", "kill $(cat /tmp/tcsh-httpd.pid); rm -f /tmp/tcsh-httpd.pid; "
                  "for i in $(seq 1 40); do ss -Hntl | grep -q ':4000 ' || break; sleep 0.1; done")
        lab.start_serving("tomcat2", "tomcat10")


def test_a_name_resolving_to_loopback_fails(lab):
    lab.check("tomcat1", 'cp /etc/hosts /tmp/tcsh-hosts && printf "127.0.1.1\\t%s\\n" "$(hostname)" >> /etc/hosts')
    try:
        ok, detail = checks(pf.preflight(lab.inv, "delta"), "tomcat1")["host name"]
        assert not ok and "resolves to 127.0.1.1" in detail, detail
        proc = subprocess.run([sys.executable, "-m", "invoke", "preflight", "-i", str(lab.inv_path), "--json"],
                              cwd=ROOT, capture_output=True, text=True, timeout=120)
        assert proc.returncode == 1, proc.stderr
        hosts = {h["name"]: h for h in json.loads(proc.stdout)["hosts"]}
        assert not hosts["tomcat1"]["ok"] and hosts["tomcat2"]["ok"] and hosts["nginx"]["ok"]
        with Remote(lab.inv) as rem:
            capture("loopback-name-tomcat1.txt", rem.run(lab.inv.host("tomcat1"), shell.preflight_facts_script()).stdout)
    finally:
        lab.check("tomcat1", "cat /tmp/tcsh-hosts > /etc/hosts")
    assert checks(pf.preflight(lab.inv, "delta"), "tomcat1")["host name"][0]


def bridge_port_of(lab: LabHandle, address: str) -> str:
    """The lab bridge's port (a veth on this machine) that leads to the host with `address`."""
    br = lab.spec.bridge
    neigh = subprocess.run(["ip", "neigh", "show", address, "dev", br], capture_output=True, text=True, check=True).stdout
    mac = neigh.split("lladdr")[1].split()[0]
    fdb = subprocess.run(["bridge", "fdb", "show", "br", br], capture_output=True, text=True, check=True).stdout
    return next(l.split()[2] for l in fdb.splitlines() if l.startswith(mac + " dev "))


def test_multicast_blocked_on_one_host_fails_and_says_static(lab):
    """The lab bridge stops delivering multicast to tomcat2 (snooping off, flooding off on its
    port: the lab hosts' kernel has no tc qdiscs and no nftables/iptables here): tomcat2 hears
    nothing from tomcat1 and preflight says to use static membership."""
    br = lab.spec.bridge
    port = bridge_port_of(lab, lab.inv.host("tomcat2").address)
    snooping = Path(f"/sys/class/net/{br}/bridge/multicast_snooping").read_text().strip()
    subprocess.run(["ip", "link", "set", "dev", br, "type", "bridge", "mcast_snooping", "0"], check=True)
    subprocess.run(["bridge", "link", "set", "dev", port, "mcast_flood", "off"], check=True)
    try:
        with Remote(lab.inv) as rem:
            facts = pf.with_preflight_facts(rem, lab.inv, factsmod.gather(rem, list(lab.inv.tomcats) + [lab.inv.nginx]))
            outputs = pf.probe_multicast(rem, lab.inv, facts)
        for name, text in outputs.items():
            capture(f"mcast-blocked-{name}.txt", text or "")
        judged = pf.judge_multicast(outputs, ["tomcat1", "tomcat2"], "228.0.0.4", 45564)
        _, ok, detail = judged["tomcat2"]
        assert not ok and detail == ('heard nothing on 228.0.0.4:45564 from tomcat1: multicast is not delivered '
                                     'between these hosts; use membership = "static" in [delta]'), detail
        report = pf.preflight(lab.inv, "delta")
        assert not report.ok and any(p.startswith("tomcat2: multicast: heard nothing") for p in report.problems)
    finally:
        subprocess.run(["bridge", "link", "set", "dev", port, "mcast_flood", "on"], check=True)
        subprocess.run(["ip", "link", "set", "dev", br, "type", "bridge", "mcast_snooping", snooping], check=True)
    assert pf.preflight(lab.inv, "delta").ok


# The distribution's automatic upgraders (#22): the lab root's apt cache carries unattended-upgrades
# and needrestart (tcsession.lab.AUTOMATIC_UPGRADERS) and the older openjdk-17 (OLDER_PACKAGES).
UPGRADERS = "unattended-upgrades needrestart"
APT = "DEBIAN_FRONTEND=noninteractive apt-get -y -q --no-download --no-install-recommends"
LIST = "dpkg-query -W -f='${Package}\\n' | sort"
OLD_JRE, NEW_JRE = "17.0.19+10-1~deb12u2", "17.0.21.1+2-1~deb12u1"
# (no units: rollback restarts each Tomcat of the deploy it undoes, drained, whatever the files)
WATCHED = dict(files=("/etc/tomcat10/server.xml", "/etc/default/tomcat10"), dirs=(),
               globs=("/etc/apt/apt.conf.d/*", "/etc/needrestart/conf.d/*"))


def main_pids(lab) -> dict[str, str]:
    return {h: lab.check(h, "systemctl show -p MainPID --value tomcat10").strip() for h in ("tomcat1", "tomcat2")}


def test_automatic_upgrades_are_warned_about_then_held_by_a_deploy_and_rolled_back(lab):
    """unattended-upgrades (enabled by Debian's debconf default) and needrestart in automatic mode
    on tomcat1: preflight and status warn (never fail); a deploy with [packages] automatic = "hold"
    writes tcsession's two files (no restart), which apt-config, unattended-upgrade --dry-run and
    needrestart itself honour (a JRE downgrade and upgrade restart no Tomcat); rollback removes
    them (every other byte as before; it restarts the Tomcats drained, as every rollback does); the
    packages are purged again (the host's files and package list as found)."""
    found = host_state(lab, "tomcat1", **WATCHED)
    try:
        lab.check("tomcat1", f"{LIST} > /tmp/tcsg-packages-before && {APT} install {UPGRADERS} >/dev/null && "
                             "echo \"\\$nrconf{restart} = 'a';\" > /etc/needrestart/conf.d/operator.conf")
        report = pf.preflight(lab.inv, "delta")
        assert report.ok, report.problems
        ok, detail = checks(report, "tomcat1")["automatic upgrades"]
        # memcached too where an earlier test on the shared cluster (an msm switch) left it installed
        mc = lab.check("tomcat1", "dpkg-query -W -f='${db:Status-Abbrev}' memcached 2>/dev/null || true").startswith("ii")
        assert ok and detail.startswith("warning: unattended-upgrades (apt-daily-upgrade.timer) upgrades "
                                        "default-jre-headless, libtomcat10-java, " + ("memcached, " if mc else "")
                                        + "openjdk-17-jre-headless, tomcat10, tomcat10-common, whose package scripts "
                                        "restart tomcat10" + (", memcached;" if mc else ";")), detail
        assert (f"needrestart ($nrconf{{restart}} = 'a') restarts tomcat10{', memcached' if mc else ''} " in detail
                and detail.endswith(unattended.FIX)), detail
        assert checks(report, "tomcat2")["automatic upgrades"] == (True, "no automatic upgrader enabled")
        st = status.cluster_report(lab.inv, session_requests=3)
        assert st.healthy, [(h.name, h.problems) for h in st.hosts]  # a warning, not a problem
        line = next(c for c in next(h for h in st.hosts if h.name == "tomcat1").checks if c[0] == "automatic upgrades")
        assert line == ("automatic upgrades", True, detail)
        with Remote(lab.inv) as rem:
            capture("automatic-exposed-tomcat1.txt", rem.run(lab.inv.host("tomcat1"), shell.automatic_script()).stdout)

        hold = variant_inventory(lab, "hold.toml", '[packages]\nautomatic = "hold"\n')
        before = {h: host_state(lab, h, **WATCHED) for h in ("tomcat1", "tomcat2")}
        pids = main_pids(lab)
        done = deploy(hold, "delta", quiet=True)
        assert done.changed and not [s for s in done.executed if isinstance(s, RestartTomcat)]
        assert {s.host for s in done.executed if not s.check_only} == {"nginx", "tomcat1", "tomcat2"}
        assert not deploy(hold, "delta", quiet=True).changed
        dump = lab.check("tomcat1", "apt-config dump | grep '^Unattended-Upgrade::Package-Blacklist:: '")
        held = unattended.patterns("tomcat", memcached=mc)
        assert [l.split(" ", 1)[1] for l in dump.splitlines()] == [f'"{rx}";' for rx in held]
        dry = lab.check("tomcat1", "timeout 120 unattended-upgrade --dry-run -d 2>&1 | grep 'Initial blacklist'")
        assert dry.strip().endswith("Initial blacklist: " + " ".join(held)), dry
        mc2 = lab.check("tomcat2", "dpkg-query -W -f='${db:Status-Abbrev}' memcached 2>/dev/null || true").startswith("ii")
        assert lab.check("tomcat2", f"cat {unattended.APT_HOLD}").encode() == unattended.render_apt_hold(
            unattended.patterns("tomcat", memcached=mc2))
        assert lab.run("tomcat2", f"test -e {unattended.NEEDRESTART_CONF}").exit == 1  # no needrestart there
        ok, detail = checks(pf.preflight(hold, "delta"), "tomcat1")["automatic upgrades"]
        assert (ok, detail) == (True, "unattended-upgrades on, the cluster's packages held; needrestart "
                                      f"($nrconf{{restart}} = 'a') leaves tomcat10{', memcached' if mc else ''} alone"), detail
        # needrestart itself: a JRE replaced under the running Tomcat, down and up again, restarts nothing
        out = lab.check("tomcat1", f"{APT} --allow-downgrades install openjdk-17-jre-headless={OLD_JRE} 2>&1 && "
                                   f"{APT} install openjdk-17-jre-headless={NEW_JRE} 2>&1")
        assert out.count("Service restarts being deferred:\n systemctl restart tomcat10.service") == 2, out
        assert main_pids(lab) == pids  # neither the deploy nor the JRE restarted a Tomcat

        rollback(hold, quiet=True)
        for h in ("tomcat1", "tomcat2"):
            assert host_state(lab, h, **WATCHED) == before[h]
        assert lab.run("nginx", f"test -e {unattended.APT_HOLD}").exit == 1
    finally:
        # every package the install brought (purge --autoremove keeps those another package suggests)
        lab.check("tomcat1", f"rm -f /etc/needrestart/conf.d/operator.conf && {LIST} > /tmp/tcsg-packages-after && "
                             f"{APT} purge $(comm -13 /tmp/tcsg-packages-before /tmp/tcsg-packages-after) >/dev/null && "
                             "rm -rf /var/log/unattended-upgrades /tmp/tcsg-packages-*")
    assert host_state(lab, "tomcat1", **WATCHED) == found

"""The built-in lab, for real: hosts boot, answer SSH with checked host keys, install packages
without internet, and `down` leaves nothing behind."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from conftest import ROOT, LabHandle, write_lab_inventory
from test_lab_down import _left_of
from tcsession import lab, status
from tcsession.errors import TcsessionError
from tcsession.remote import Remote

pytestmark = pytest.mark.lab


def test_fresh_hosts_look_like_freshly_installed_servers(fresh_lab):
    report = status.host_report(fresh_lab.inv)
    assert [h.name for h in report.hosts] == ["nginx", "tomcat1", "tomcat2"]
    for h in report.hosts:
        assert h.reachable, h.error
        # Not "degraded": each container has its own cgroup (shared, units failed with
        # status=219/CGROUP at random and hosts booted degraded).
        assert h.facts.system_state == "running", (h.facts.system_state, h.facts.failed_units)
        assert h.facts.hostname == h.name
        assert h.facts.package_manager == "apt-get"
        assert h.facts.os["VERSION_CODENAME"] == "bookworm"
        assert not set(h.facts.packages) & {"tomcat10", "tomcat9", "nginx", "memcached"}
        assert any(l.port == 22 for l in h.facts.listeners)
    assert report.healthy, report.to_dict()


def test_sshd_active_and_hostname_resolves_to_the_real_address(fresh_lab):
    for h in fresh_lab.inv.hosts:
        r = fresh_lab.run(h.name, "systemctl is-active ssh; getent hosts $(hostname)")
        assert r.ok, r.why()
        active, resolved = r.stdout.splitlines()[:2]
        assert active == "active"
        # Never 127.0.1.1: a Tomcat Receiver with address="auto" would advertise it.
        assert resolved.split()[0] == h.address


def test_preflight_passes_on_fresh_hosts(fresh_lab):
    """inv preflight before any deploy (moved here from test_preflight_lab.py: fresh hosts are
    this module's; it runs before the package install below touches the nginx host)."""
    from tcsession import preflight as pf

    report = pf.preflight(fresh_lab.inv, "delta")
    assert report.ok, report.problems
    c = {what: (ok, detail) for what, ok, detail in next(h for h in report.hosts if h.name == "tomcat1").checks}
    assert c["multicast"] == (True, "228.0.0.4:45564 heard from 1 peer(s)")
    assert c["java"][0] and "not installed yet" in c["java"][1]
    where = os.environ.get("TCSESSION_CAPTURE")
    if where:  # tests/data/preflight/ came from such a run
        from pathlib import Path

        from tcsession import facts as factsmod
        from tcsession import shell

        with Remote(fresh_lab.inv) as r:
            out = r.run(fresh_lab.inv.host("tomcat1"), factsmod.deploy_script() + shell.preflight_facts_script())
        assert out.ok, out.why()
        Path(where, "fresh-tomcat1.txt").write_text(out.stdout)


def test_packages_install_inside_a_host_without_internet(fresh_lab):
    r = fresh_lab.run("nginx", "ip route show default; "
                      "DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "
                      "nginx memcached >/tmp/install.log 2>&1 || { tail -5 /tmp/install.log; exit 1; }; "
                      "systemctl is-active nginx memcached")
    assert r.ok, r.why() + r.stdout
    lines = r.stdout.split()
    assert lines == ["active", "active"], r.stdout  # and no default route was printed


def test_each_host_has_its_own_host_key_and_keys_are_checked(fresh_lab):
    known = fresh_lab.spec.known_hosts.read_text().splitlines()
    keys = [line.split()[2] for line in known]
    assert len(keys) == 3 and len(set(keys)) == 3
    # Give tomcat1's address tomcat2's key: the connection must be refused, not auto-added.
    original = fresh_lab.spec.known_hosts.read_text()
    forged = original.replace(keys[1], keys[2], 1)
    try:
        fresh_lab.spec.known_hosts.write_text(forged)
        r = fresh_lab.run("tomcat1", "true")
        assert not r.ok and r.exit is None
        assert "tomcat1" in r.error
        assert fresh_lab.spec.known_hosts.read_text() == forged  # nothing was added
    finally:
        fresh_lab.spec.known_hosts.write_text(original)
    assert fresh_lab.run("tomcat1", "true").ok


def test_lab_status_task_shows_every_host(fresh_lab):
    proc = subprocess.run([sys.executable, "-m", "invoke", "lab.status", "-i", str(fresh_lab.inv_path),
                           "--json"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    import json

    data = json.loads(proc.stdout)
    assert data["healthy"] is True
    assert {h["name"]: h["os"] for h in data["hosts"]} == {
        n: "Debian GNU/Linux 12 (bookworm)" for n in ("nginx", "tomcat1", "tomcat2")}


def test_lifecycle_up_twice_stale_lab_and_down_leaves_nothing(tmp_path):
    # Its own lab name and subnet: it runs beside the module's lab.
    spec = LabHandle(write_lab_inventory(tmp_path, name="tcslife",
                                         subnet="10.153.8.0/24")).spec
    recorded: set[int] = set()
    try:
        started = time.monotonic()
        lab.up(spec, log=lambda *_: None)
        first_up = time.monotonic() - started
        pids = lab.host_pids(spec)
        assert all(pids.values()) and lab.is_up(spec)
        recorded = set(pids.values())
        assert _left_of(spec, recorded)  # the check sees a running lab
        lab.up(spec, log=lambda *_: None)  # twice is safe: the same containers keep running
        assert lab.host_pids(spec) == pids
        # A stale lab: processes gone (as when a session ends), kernel state left behind.
        for pid in pids.values():
            os.kill(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while any(lab.host_pids(spec).values()) and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not lab.is_up(spec)
        assert any(x.startswith("bridge") for x in lab.leftovers(spec))
        lab.up(spec, log=lambda *_: None)
        assert lab.is_up(spec) and lab.host_pids(spec) != pids
        recorded = {p for p in lab.host_pids(spec).values() if p}  # the killed ones are gone
        print(f"lab up on a cached root: {first_up:.1f} s")
    finally:
        lab.down(spec, log=lambda *_: None)
        left = _left_of(spec, recorded)  # right away, no waiting (test_lab_down.py's in-process case)
    assert left == []
    assert lab.leftovers(spec) == []
    assert not lab.is_up(spec)


def test_nothing_is_sent_to_lab_addresses_while_the_lab_is_down(tmp_path):
    inv_path = write_lab_inventory(tmp_path, name="tcsdown", subnet="10.153.9.0/24")
    handle = LabHandle(inv_path)
    assert not lab.is_up(handle.spec) or pytest.fail("test lab unexpectedly up")
    from tcsession.deploy import deploy
    from tcsession.rollback import rollback
    from tcsession.status import cluster_report

    for run in (lambda: deploy(handle.inv, "delta", quiet=True), lambda: rollback(handle.inv, quiet=True),
                lambda: cluster_report(handle.inv)):
        with pytest.raises(TcsessionError, match=r"lab\.up` first"):
            run()
    proc = subprocess.run([sys.executable, "-m", "invoke", "status", "-i", str(inv_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3  # hosts unreachable (docs/cli.md)
    assert "lab.up` first" in proc.stderr and "Traceback" not in proc.stderr


def test_a_missing_program_is_one_line_saying_what_to_install(tmp_path, monkeypatch):
    # A PATH without the lab's programs, as on a machine where they are not installed.
    (tmp_path / "bin").mkdir()
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    with pytest.raises(TcsessionError) as err:
        lab.check_prerequisites()
    assert str(err.value) == "lab: mmdebstrap not found; install it with: apt-get install -y mmdebstrap"

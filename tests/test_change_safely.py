"""Change safely, on real hosts: a rolling configuration change and its rollback under client
load with no failed request and no lost update; rollback refuses to lose an operator's edit;
a host lost in the middle of a deploy; a malformed server.xml already on a host. On the shared
cluster of conftest, every test putting it back."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, host_state, shared_cluster_for_module, variant_inventory, wait_answered
from tcsession import lab, status
from tcsession.deploy import deploy
from tcsession.errors import TcsessionError
from tcsession.load import Load
from tcsession.rollback import history, rollback
from tcsession.steps import WriteFiles

pytestmark = pytest.mark.lab

SERVER_XML = "/etc/tomcat10/server.xml"


@pytest.fixture(scope="module")
def cluster(shared_cluster, tmp_path_factory):
    """The shared cluster (conftest): every test here puts it back."""
    yield from shared_cluster_for_module(shared_cluster, tmp_path_factory, "chg")


def variant(handle, **delta):
    name = f"hosts-{len(list(handle.tmp.iterdir()))}.toml"
    return variant_inventory(handle, name, "[delta]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in delta.items()))


def shas(handle, host: str, *paths: str) -> str:
    """The files' sha256 lines; the command checked (every file must exist)."""
    out = handle.check(host, "sha256sum " + " ".join(paths))
    assert len(out.splitlines()) == len(paths), out
    return out


def test_rolling_deploy_and_rollback_under_load_lose_nothing(cluster):
    before = {t: shas(cluster, t, SERVER_XML) for t in ("tomcat1", "tomcat2")}
    changed = variant(cluster, channel_send_options=2)
    with Load(cluster.inv.nginx.address, sessions=5, rate=20) as load:
        wait_answered(load)
        report = deploy(changed, "delta", quiet=True)
        wait_answered(load)
    assert report.changed
    print(f"\nrolling deploy under load: {load.result.line()}")
    assert load.result.requests > 100
    assert (load.result.failed, load.result.lost_updates) == (0, 0), load.result.errors
    with Load(cluster.inv.nginx.address, sessions=5, rate=20) as load:
        wait_answered(load)
        assert rollback(cluster.inv, quiet=True) == [report.deploy_id]
        wait_answered(load)
    print(f"rollback under load: {load.result.line()}")
    assert load.result.requests > 100
    assert (load.result.failed, load.result.lost_updates) == (0, 0), load.result.errors
    assert {t: shas(cluster, t, SERVER_XML) for t in ("tomcat1", "tomcat2")} == before
    assert not deploy(cluster.inv, "delta", quiet=True).changed  # back where it was, nothing owed


def test_rollback_refuses_to_lose_an_edit_and_force_keeps_it(cluster):
    report = deploy(variant(cluster, channel_send_options=2), "delta", quiet=True)
    edit = "<!-- a note by the operator -->"
    assert cluster.run("tomcat1", f"echo '{edit}' >> {SERVER_XML}").ok
    edited = shas(cluster, "tomcat1", SERVER_XML)
    with pytest.raises(TcsessionError) as err:
        rollback(cluster.inv, quiet=True)
    assert f"tomcat1:{SERVER_XML}" in str(err.value) and "--force" in str(err.value)
    assert shas(cluster, "tomcat1", SERVER_XML) == edited  # refused: nothing changed
    assert rollback(cluster.inv, force=True, quiet=True) == [report.deploy_id]
    kept = cluster.check("tomcat1", f"grep -l \"{edit}\" /var/lib/tcsession/deploys/{report.deploy_id}/overwritten/*")
    assert kept.strip()
    assert not deploy(cluster.inv, "delta", quiet=True).changed


# How long a restarted Tomcat may take to serve and see its peers before the deploy stops:
# tcsession's RestartTomcat.timeout is 120 s (not settable from the inventory). The lost-host test
# waits that bound out (172 s measured); it plans with 20 s instead: the claim is what happens when
# the bound is reached, not how long the bound is.
LOST_HOST_TIMEOUT = 20.0


def test_a_host_lost_mid_deploy_then_the_deploy_converges_and_rollback_restores(cluster, monkeypatch):
    import functools

    from tcsession import rollout
    from tcsession.steps import RestartTomcat

    before = {t: shas(cluster, t, SERVER_XML) for t in ("tomcat1", "tomcat2")}
    changed = variant(cluster, channel_send_options=2)
    outcome = {}

    def run():
        try:
            deploy(changed, "delta", quiet=True)
        except TcsessionError as e:
            outcome["error"] = str(e)

    monkeypatch.setattr(rollout, "RestartTomcat", functools.partial(RestartTomcat, timeout=LOST_HOST_TIMEOUT))

    t = threading.Thread(target=run)
    t.start()
    # As soon as tomcat2 has its new files (before its turn to restart), power it off.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if shas(cluster, "tomcat2", SERVER_XML) != before["tomcat2"]:
            break
        time.sleep(0.2)
    lab.stop_host(cluster.spec, "tomcat2")
    try:
        t.join(timeout=300)
        error = outcome.get("error", "")
        # tomcat1 restarts, serves, and never sees its peer as a cluster member again: the deploy
        # stops there (the next node is not touched), naming why, with tomcat2 owing its restart
        assert "stopped" in error and "tomcat1: restart tomcat10" in error, error
        assert "sees 0 of 1 cluster members" in error and "tomcat2: in progress" in error, error
        assert "rollback` to undo it" in error
        assert f"after {LOST_HOST_TIMEOUT:g} s" in error, error  # the bound this test set was the one reached
    finally:
        monkeypatch.undo()
        lab.start_host(cluster.spec, "tomcat2")
        # back: its Tomcat starts at boot; converging while it is still starting would make tomcat1,
        # restarted first, ask it for the sessions before its context is up (a 60 s state timeout)
        cluster.start_serving("tomcat2", "tomcat10")
    # Running the deploy again converges (tomcat2 booted with new files but owes a restart).
    report = deploy(changed, "delta", quiet=True)
    assert report.changed and not any(isinstance(s, WriteFiles) for s in report.executed)
    healthy = status.cluster_report(changed)
    assert healthy.healthy, [(h.name, h.problems) for h in healthy.hosts]
    # And rollback restores the state before the failed deploy.
    rollback(cluster.inv, quiet=True)
    assert {t: shas(cluster, t, SERVER_XML) for t in ("tomcat1", "tomcat2")} == before
    assert status.cluster_report(cluster.inv).healthy


def test_a_malformed_server_xml_on_a_host_changes_nothing_anywhere(cluster):
    good = cluster.run("tomcat2", f"cp -p {SERVER_XML} /root/server.xml.good && head -c 2000 {SERVER_XML} > /tmp/x "
                       f"&& cat /tmp/x > {SERVER_XML}")
    assert good.ok
    before = {t: shas(cluster, t, SERVER_XML, "/var/lib/tomcat10/bin/setenv.sh") for t in ("tomcat1", "tomcat2")}
    try:
        with pytest.raises(TcsessionError) as err:
            deploy(variant(cluster, channel_send_options=2), "delta", quiet=True)
        msg = str(err.value)
        assert msg.startswith(f"tomcat2:{SERVER_XML}") and "\n" not in msg
        assert {t: shas(cluster, t, SERVER_XML, "/var/lib/tomcat10/bin/setenv.sh")
                for t in ("tomcat1", "tomcat2")} == before
    finally:
        cluster.check("tomcat2", f"cp -p /root/server.xml.good {SERVER_XML}")


def snapshot(handle) -> dict:
    """Per host: checksums of every file tcsession manages there, the services' PIDs, the
    installed packages (their list's checksum), the deploy records; one checked command each."""
    tomcat = dict(files=(SERVER_XML, "/var/lib/tomcat10/bin/setenv.sh"), units=("tomcat10",))
    return {"nginx": host_state(handle, "nginx", files=("/etc/nginx/conf.d/tcsession.conf",), units=("nginx",)),
            **{t: host_state(handle, t, **tomcat) for t in ("tomcat1", "tomcat2")}}


def inv_deploy(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "invoke", "deploy", *args], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)


def test_refusals_that_reach_the_hosts_change_nothing_on_any_host(cluster):
    """Bad inputs only the hosts can reveal: one line each, exit 1, and every host as it was."""
    before = snapshot(cluster)
    original = cluster.spec.known_hosts.read_text()
    kh = original.splitlines()
    a_nginx, a_t1, a_t2 = (cluster.inv.host(n).address + " " for n in ("nginx", "tomcat1", "tomcat2"))
    cases = {
        # nginx's key missing from known_hosts: refused with the key's fingerprint
        # (a host whose key is refused is not reached: exit 3, the contract's "hosts unreachable")
        "unknown key": ("\n".join(l for l in kh if not l.startswith(a_nginx)) + "\n",
                        ["nginx", "SHA256:", "ssh-keyscan"], 3),
        # tomcat2's key replaced by tomcat1's: a changed key
        "changed key": ("\n".join((a_t2 + next(k for k in kh if k.startswith(a_t1)).split(" ", 1)[1])
                                  if l.startswith(a_t2) else l for l in kh) + "\n", ["tomcat2", "CHANGED"], 3),
        # a line that is no key at all: every host blocked, the file and line named
        "malformed line": ("garbage\n" + original, ["line 1", "sed -i '1d'"], 1),
    }
    target = variant(cluster, channel_send_options=2).path
    assert len(kh) == 3 and all(any(l.startswith(a) for l in kh) for a in (a_nginx, a_t1, a_t2)), kh
    try:
        for what, (text, words, code) in cases.items():
            cluster.spec.known_hosts.write_text(text)
            proc = inv_deploy("--mode=delta", "-i", str(target))
            err = proc.stderr.strip()
            assert proc.returncode == code and len(err.splitlines()) == 1 and "Traceback" not in err, (what, err)
            assert all(w in err for w in words), (what, err)
    finally:
        cluster.spec.known_hosts.write_text(original)
    # 3. a server.xml on one host that cannot be parsed (the deploy plans every host first)
    assert cluster.run("tomcat2", f"cp -p {SERVER_XML} /root/sx.good && printf '<Server><Service>' > {SERVER_XML}").ok
    try:
        proc = inv_deploy("--mode=delta", "-i", str(variant(cluster, channel_send_options=2).path))
        assert proc.returncode == 1 and proc.stderr.strip().startswith(f"tcsession: tomcat2:{SERVER_XML}")
    finally:
        assert cluster.run("tomcat2", f"cp -p /root/sx.good {SERVER_XML}").ok
    assert snapshot(cluster) == before


def test_an_interrupted_deploy_is_recorded_and_recoverable(cluster):
    """SIGTERM while a Tomcat restarts: the node goes back in service in nginx, the deploy is
    recorded and says where each host is; the next deploy converges, rollback restores."""
    before = {t: shas(cluster, t, SERVER_XML) for t in ("tomcat1", "tomcat2")}
    changed = variant(cluster, channel_send_options=2)
    proc = subprocess.Popen([sys.executable, "-m", "invoke", "deploy", "--mode=delta", "-i", str(changed.path)],
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:  # until tomcat1 is out of service: its restart is under way
            # grep -c: 1 when no line matched (prints 0), 2 on an error (which fails here)
            r = cluster.check("nginx", "grep -c ' down;' /etc/nginx/conf.d/tcsession.conf; test $? -le 1")
            if r.strip() not in ("", "0"):
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=240)
    finally:
        if proc.poll() is None:
            proc.kill()
    err = err.strip()
    assert proc.returncode == 130 and len(err.splitlines()) == 1, err  # interrupted (docs/cli.md)
    assert "interrupted during tomcat1: restart tomcat10" in err and "rollback` to undo it" in err, err
    assert "down;" not in cluster.check("nginx", "cat /etc/nginx/conf.d/tcsession.conf")
    ids = {r.id for recs in history(cluster.inv).values() for r in recs if not r.rolled_back}
    assert ids, "the interrupted deploy left no record"
    assert deploy(changed, "delta", quiet=True).changed  # converges: the restarts it still owed
    assert status.cluster_report(changed).healthy
    rollback(cluster.inv, quiet=True)
    assert {t: shas(cluster, t, SERVER_XML) for t in ("tomcat1", "tomcat2")} == before


# Rolling everything back to the freshly installed packages (Debian's server.xml byte for byte,
# Tomcat stopped, the test page and setenv.sh gone, nginx's default site back and nginx stopped)
# is proven in tests/test_msm_lab.py::test_rollback_of_everything_returns_the_hosts_as_installed,
# on a lab that ends there anyway: on the shared cluster it would walk back through every other
# module's deploys (a BackupManager switch among them, which cannot be rolled node by node).

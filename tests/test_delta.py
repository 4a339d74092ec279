"""deploy --mode=delta on real hosts (bookworm, Tomcat 10.1): from fresh hosts, a session that
survives a node, a second deploy that changes nothing, and the other settings (static
membership, BackupManager) applied as configuration changes to the same running cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, LabHandle, write_lab_inventory
from tcsession import status
from tcsession.client import SessionClient
from tcsession.deploy import deploy
from tcsession.inventory import load_inventory

pytestmark = pytest.mark.lab

CONFIG_FILES = ("/etc/tomcat10/server.xml", "/var/lib/tomcat10/bin/setenv.sh",
                "/var/lib/tomcat10/webapps/ROOT/WEB-INF/web.xml", "/var/lib/tomcat10/webapps/ROOT/test.jsp")


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    handle = LabHandle(write_lab_inventory(tmp_path_factory.mktemp("delta"))).up()
    try:
        report = deploy(handle.inv, "delta", quiet=True)
        assert report.changed and report.deploy_id
        yield handle
    finally:
        handle.down()


def with_delta(handle: LabHandle, tmp_path, **settings):
    """The same lab with other [delta] settings (a configuration change, same hosts)."""
    text = handle.inv_path.read_text() + "\n[delta]\n" + "".join(
        f"{k} = {json.dumps(v)}\n" for k, v in settings.items())
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    return load_inventory(path)


def snapshot(handle: LabHandle) -> dict:
    out = {}
    for t in ("tomcat1", "tomcat2"):
        r = handle.run(t, f"sha256sum {' '.join(CONFIG_FILES)}; systemctl show -p MainPID --value tomcat10")
        assert r.ok, r.why()
        out[t] = r.stdout
    r = handle.run("nginx", "sha256sum /etc/nginx/conf.d/tcsession.conf; systemctl show -p MainPID --value nginx")
    out["nginx"] = r.stdout
    return out


def session_survives_a_node(handle: LabHandle, inv, unit: str = "tomcat10") -> None:
    """40 requests with no lost update; stop the node serving the session; the other node goes
    on with the same session and counter; restart it; status healthy again."""
    client = SessionClient(inv.nginx.address, inv.nginx.http_port)
    for _ in range(40):
        client.request()
    run = client.run
    assert run.ok and run.last_count == 40, run.to_dict()
    serving = run.last_node
    other = "tomcat2" if serving == "tomcat1" else "tomcat1"
    assert handle.run(serving, f"systemctl stop {unit}").ok
    try:
        for _ in range(10):
            client.request()
        assert run.ok and run.last_count == 50, run.to_dict()
        assert run.last_node == other
        assert run.session_ids[-1].endswith("." + other)  # JvmRouteBinderValve moved the route
    finally:
        handle.start_serving(serving, unit)
    deadline = time.monotonic() + 30
    while True:
        report = status.cluster_report(inv, session_requests=10)
        if report.healthy or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert report.healthy, [(h.name, h.problems) for h in report.hosts] + [report.session.to_dict()]
    for _ in range(5):
        client.request()
    assert run.ok and run.last_count == 55, run.to_dict()


def test_status_is_healthy_after_deploy_from_fresh_hosts(cluster):
    report = status.cluster_report(cluster.inv, session_requests=10)
    assert report.mode == "delta"
    assert report.healthy, [(h.name, h.problems) for h in report.hosts] + [report.session.to_dict()]
    t1 = next(h for h in report.hosts if h.name == "tomcat1")
    assert t1.members == ("10.153.7.113:4000",)
    assert report.session.last_count == 10


def test_status_task_json_and_exit_code(cluster):
    proc = subprocess.run([sys.executable, "-m", "invoke", "status", "-i", str(cluster.inv_path), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["healthy"] and data["mode"] == "delta" and data["session_check"]["lost_updates"] == 0


def test_second_deploy_changes_nothing(cluster):
    before = snapshot(cluster)
    report = deploy(cluster.inv, "delta", quiet=True)
    assert not report.changed and report.deploy_id is None and report.plan.empty
    assert snapshot(cluster) == before  # same checksums, same Tomcat and nginx process ids


def test_session_survives_the_loss_of_the_node_serving_it(cluster):
    session_survives_a_node(cluster, cluster.inv)


def test_static_membership(cluster, tmp_path):
    inv = with_delta(cluster, tmp_path, membership="static")
    report = deploy(inv, "delta", quiet=True)
    assert report.changed
    r = cluster.run("tomcat1", "grep -c StaticMembershipService /etc/tomcat10/server.xml")
    assert r.stdout.strip() == "1"
    session_survives_a_node(cluster, inv)
    assert not deploy(inv, "delta", quiet=True).changed


def test_backup_manager(cluster, tmp_path):
    inv = with_delta(cluster, tmp_path, manager="backup")
    assert deploy(inv, "delta", quiet=True).changed
    r = cluster.run("tomcat2", "grep -c 'ha.session.BackupManager' /etc/tomcat10/server.xml")
    assert r.stdout.strip() == "1"
    session_survives_a_node(cluster, inv)
    assert not deploy(inv, "delta", quiet=True).changed


def test_dry_run_shows_the_diff_and_changes_nothing(cluster, tmp_path):
    inv = with_delta(cluster, tmp_path, channel_send_options=2)
    before = snapshot(cluster)
    proc = subprocess.run([sys.executable, "-m", "invoke", "deploy", "--mode=delta", "--dry-run",
                           "-i", str(inv.path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert '-      <Cluster className="org.apache.catalina.ha.tcp.SimpleTcpCluster" channelSendOptions="6">' in lines
    assert '+      <Cluster className="org.apache.catalina.ha.tcp.SimpleTcpCluster" channelSendOptions="2">' in lines
    assert sum(l.startswith("+++ /etc/tomcat10/server.xml") for l in lines) == 2  # both Tomcats
    assert "restart tomcat10" in proc.stdout
    assert snapshot(cluster) == before

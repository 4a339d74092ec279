"""deploy --mode=delta on real hosts (bookworm, Tomcat 10.1): from fresh hosts (the shared
cluster of conftest, deployed once for the run), a session that survives a node, a second deploy
that changes nothing, and the other settings (static membership, BackupManager) applied as
configuration changes to the same running cluster, which is put back after each."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest

from conftest import ROOT, LabHandle, session_of, shared_cluster_for_module, variant_inventory
from tcsession import status
from tcsession.deploy import deploy
from tcsession.errors import UsageError

pytestmark = pytest.mark.lab

CONFIG_FILES = ("/etc/tomcat10/server.xml", "/var/lib/tomcat10/bin/setenv.sh",
                "/var/lib/tomcat10/webapps/ROOT/WEB-INF/web.xml", "/var/lib/tomcat10/webapps/ROOT/test.jsp")


@pytest.fixture(scope="module")
def cluster(shared_cluster, tmp_path_factory):
    yield from shared_cluster_for_module(shared_cluster, tmp_path_factory, "delta")


def with_delta(handle: LabHandle, name: str, **settings):
    """The same lab with other [delta] settings (a configuration change, same hosts)."""
    return variant_inventory(handle, name, "[delta]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in settings.items()))


def snapshot(handle: LabHandle) -> dict:
    """Checksums of the managed files and the Tomcat and nginx PIDs, each command checked."""
    out = {}
    for t in ("tomcat1", "tomcat2"):
        out[t] = handle.check(t, f"sha256sum {' '.join(CONFIG_FILES)}") + handle.pid(t, "tomcat10")
    out["nginx"] = handle.check("nginx", "sha256sum /etc/nginx/conf.d/tcsession.conf") + handle.pid("nginx", "nginx")
    assert all(len(v.splitlines()) >= 2 for v in out.values()), out
    return out


def session_survives_a_node(handle: LabHandle, inv, unit: str = "tomcat10") -> None:
    """40 requests with no lost update; stop the node serving the session; the other node goes
    on with the same session and counter; restart it; status healthy again."""
    client = session_of(inv, 40)
    run = client.run
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
    while True:  # polled: the restarted node rejoins within seconds
        report = status.cluster_report(inv, session_requests=10)
        if report.healthy or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert report.healthy, [(h.name, h.problems) for h in report.hosts] + [report.session.to_dict()]
    for _ in range(5):
        client.request()
    assert run.ok and run.last_count == 55, run.to_dict()


def test_status_is_healthy_after_deploy_from_fresh_hosts(cluster):
    report = status.cluster_report(cluster.inv, session_requests=10)
    assert report.mode == "delta"
    assert report.healthy, [(h.name, h.problems) for h in report.hosts] + [report.session.to_dict()]
    t1 = next(h for h in report.hosts if h.name == "tomcat1")
    assert t1.members == (f"{cluster.inv.host('tomcat2').address}:4000",)
    assert report.session.last_count == 10


def test_status_task_json_and_exit_code(cluster):
    proc = subprocess.run([sys.executable, "-m", "invoke", "status", "-i", str(cluster.inv_path), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    data = json.loads(proc.stdout)
    assert data["healthy"] and data["mode"] == "delta" and data["session_check"]["lost_updates"] == 0
    # the contract (docs/cli.md): versioned, exit code inside, checks by stable id, hosts by name
    assert (data["schema"], data["ok"], data["exit"]) == ("tcsession.status/1", True, 0)
    t1 = next(h for h in data["hosts"] if h["name"] == "tomcat1")
    ids = {c["id"]: c["ok"] for c in t1["checks"]}
    assert ids["cluster.members"] and ids["port.receiver"] and ids["port.http"] and ids["service.tomcat"], ids


def test_second_deploy_changes_nothing(cluster):
    before = snapshot(cluster)
    report = deploy(cluster.inv, "delta", quiet=True)
    assert not report.changed and report.deploy_id is None and report.plan.empty
    assert snapshot(cluster) == before  # same checksums, same Tomcat and nginx process ids


def test_session_survives_the_loss_of_the_node_serving_it(cluster):
    session_survives_a_node(cluster, cluster.inv)


def test_static_membership(cluster):
    inv = with_delta(cluster, "static.toml", membership="static")
    with pytest.raises(UsageError, match="to switch, give --switch-membership"):  # a running multicast cluster
        deploy(inv, "delta", quiet=True)
    report = deploy(inv, "delta", quiet=True, switch_membership=True)
    assert report.changed
    assert cluster.check("tomcat1", "grep -c StaticMembershipService /etc/tomcat10/server.xml").strip() == "1"
    session_survives_a_node(cluster, inv)
    assert not deploy(inv, "delta", quiet=True).changed
    assert deploy(cluster.inv, "delta", quiet=True, switch_membership=True).changed  # back to multicast (the shared cluster's)


def test_listed_jar_scanning_starts_and_serves_and_goes_back(cluster):
    """[app] jar_scan = "listed" with no jar listed (issue 24): the managed JarScanner in conf/context.xml,
    both Tomcats restarted with it, the test page's JSP still compiles, a session survives a node;
    then back (the file as the package left it, byte for byte)."""
    before = cluster.check("tomcat1", "sha256sum /etc/tomcat10/context.xml").split()[0]
    inv = variant_inventory(cluster, "jarscan.toml", '[app]\njar_scan = "listed"\n')
    assert deploy(inv, "delta", quiet=True).changed
    assert 'defaultPluggabilityScan="false"' in cluster.check("tomcat2", "cat /etc/tomcat10/context.xml")
    session_survives_a_node(cluster, inv)
    assert not deploy(inv, "delta", quiet=True).changed
    assert deploy(cluster.inv, "delta", quiet=True).changed
    assert cluster.check("tomcat1", "sha256sum /etc/tomcat10/context.xml").split()[0] == before


def test_backup_manager(cluster):
    inv = with_delta(cluster, "backup.toml", manager="backup")
    assert deploy(inv, "delta", quiet=True).changed
    assert cluster.check("tomcat2", "grep -c 'ha.session.BackupManager' /etc/tomcat10/server.xml").strip() == "1"
    session_survives_a_node(cluster, inv)
    assert not deploy(inv, "delta", quiet=True).changed
    # Back to DeltaManager (the shared cluster's) in a maintenance window: a rolling switch from
    # BackupManager back to DeltaManager stops at the first node, which waits 60 s for session
    # state its BackupManager peer never sends (measured here; not a claim of this test).
    for t in ("tomcat1", "tomcat2"):
        cluster.check(t, "systemctl stop tomcat10")
    assert deploy(cluster.inv, "delta", quiet=True).changed


def test_dry_run_shows_the_diff_and_changes_nothing(cluster):
    inv = with_delta(cluster, "send2.toml", channel_send_options=2)
    before = snapshot(cluster)
    proc = subprocess.run([sys.executable, "-m", "invoke", "deploy", "--mode=delta", "--dry-run",
                           "-i", str(inv.path)], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert '-      <Cluster className="org.apache.catalina.ha.tcp.SimpleTcpCluster" channelSendOptions="6">' in lines
    assert '+      <Cluster className="org.apache.catalina.ha.tcp.SimpleTcpCluster" channelSendOptions="2">' in lines
    assert sum(l.startswith("+++ /etc/tomcat10/server.xml") for l in lines) == 2  # both Tomcats
    assert "restart tomcat10" in proc.stdout
    # the running cluster's members see each other: multicast is proven, not probed again (#24)
    assert "multicast proven by the running cluster (every Tomcat sees its peers as members): its probe skipped" \
        in " ".join(proc.stdout.split()), proc.stdout
    assert snapshot(cluster) == before

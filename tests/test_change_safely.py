"""Change safely, on real hosts: a rolling configuration change and its rollback under client
load with no failed request and no lost update; rollback refuses to lose an operator's edit;
a host lost in the middle of a deploy; a malformed server.xml already on a host; and rolling
everything back to the freshly installed packages."""

from __future__ import annotations

import hashlib
import json
import threading
import time
from pathlib import Path

import pytest

from conftest import LabHandle, rollback_everything, write_lab_inventory
from tcsession import lab, status
from tcsession.deploy import deploy
from tcsession.errors import TcsessionError
from tcsession.inventory import load_inventory
from tcsession.load import Load
from tcsession.rollback import history, rollback
from tcsession.steps import WriteFiles

pytestmark = pytest.mark.lab

SERVER_XML = "/etc/tomcat10/server.xml"
DEBIAN_SERVER_XML = Path(__file__).parent / "data/debian-bookworm-tomcat10/server.xml"


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    path = write_lab_inventory(tmp_path_factory.mktemp("chg"), name="tcschg", subnet="10.153.10.0/24")
    handle = LabHandle(path).up()
    try:
        assert deploy(handle.inv, "delta", quiet=True).changed
        yield handle
    finally:
        handle.down()


def variant(handle, tmp_path, **delta):
    path = tmp_path / f"hosts-{len(list(tmp_path.iterdir()))}.toml"
    path.write_text(handle.inv_path.read_text() + "\n[delta]\n"
                    + "".join(f"{k} = {json.dumps(v)}\n" for k, v in delta.items()))
    return load_inventory(path)


def shas(handle, host: str, *paths: str) -> str:
    r = handle.run(host, "sha256sum " + " ".join(paths) + " 2>&1 || true")
    return r.stdout


def test_rolling_deploy_and_rollback_under_load_lose_nothing(cluster, tmp_path):
    before = {t: shas(cluster, t, SERVER_XML) for t in ("tomcat1", "tomcat2")}
    changed = variant(cluster, tmp_path, channel_send_options=2)
    with Load(cluster.inv.nginx.address, sessions=5, rate=20) as load:
        time.sleep(2)
        report = deploy(changed, "delta", quiet=True)
        time.sleep(2)
    assert report.changed
    print(f"\nrolling deploy under load: {load.result.line()}")
    assert load.result.requests > 100
    assert (load.result.failed, load.result.lost_updates) == (0, 0), load.result.errors
    with Load(cluster.inv.nginx.address, sessions=5, rate=20) as load:
        time.sleep(2)
        assert rollback(cluster.inv, quiet=True) == [report.deploy_id]
        time.sleep(2)
    print(f"rollback under load: {load.result.line()}")
    assert load.result.requests > 100
    assert (load.result.failed, load.result.lost_updates) == (0, 0), load.result.errors
    assert {t: shas(cluster, t, SERVER_XML) for t in ("tomcat1", "tomcat2")} == before
    assert not deploy(cluster.inv, "delta", quiet=True).changed  # back where it was, nothing owed


def test_rollback_refuses_to_lose_an_edit_and_force_keeps_it(cluster, tmp_path):
    report = deploy(variant(cluster, tmp_path, channel_send_options=2), "delta", quiet=True)
    edit = "<!-- a note by the operator -->"
    assert cluster.run("tomcat1", f"echo '{edit}' >> {SERVER_XML}").ok
    edited = shas(cluster, "tomcat1", SERVER_XML)
    with pytest.raises(TcsessionError) as err:
        rollback(cluster.inv, quiet=True)
    assert f"tomcat1:{SERVER_XML}" in str(err.value) and "--force" in str(err.value)
    assert shas(cluster, "tomcat1", SERVER_XML) == edited  # refused: nothing changed
    assert rollback(cluster.inv, force=True, quiet=True) == [report.deploy_id]
    kept = cluster.run("tomcat1", f"grep -l \"{edit}\" /var/lib/tcsession/deploys/{report.deploy_id}/overwritten/*")
    assert kept.ok and kept.stdout.strip()
    assert not deploy(cluster.inv, "delta", quiet=True).changed


def test_a_host_lost_mid_deploy_then_the_deploy_converges_and_rollback_restores(cluster, tmp_path):
    before = {t: shas(cluster, t, SERVER_XML) for t in ("tomcat1", "tomcat2")}
    changed = variant(cluster, tmp_path, channel_send_options=2)
    outcome = {}

    def run():
        try:
            deploy(changed, "delta", quiet=True)
        except TcsessionError as e:
            outcome["error"] = str(e)

    t = threading.Thread(target=run)
    t.start()
    # As soon as tomcat2 has its new files (before its turn to restart), power it off.
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if shas(cluster, "tomcat2", SERVER_XML) != before["tomcat2"]:
            break
        time.sleep(0.2)
    lab.stop_host(cluster.spec, "tomcat2")
    t.join(timeout=300)
    error = outcome.get("error", "")
    assert "stopped" in error and "tomcat1: done" in error and "tomcat2:" in error, error
    assert "inv rollback" in error
    lab.start_host(cluster.spec, "tomcat2")
    # Running the deploy again converges (tomcat2 booted with new files but owes a restart).
    report = deploy(changed, "delta", quiet=True)
    assert report.changed and not any(isinstance(s, WriteFiles) for s in report.executed)
    healthy = status.cluster_report(changed)
    assert healthy.healthy, [(h.name, h.problems) for h in healthy.hosts]
    # And rollback restores the state before the failed deploy.
    rollback(cluster.inv, quiet=True)
    assert {t: shas(cluster, t, SERVER_XML) for t in ("tomcat1", "tomcat2")} == before
    assert status.cluster_report(cluster.inv).healthy


def test_a_malformed_server_xml_on_a_host_changes_nothing_anywhere(cluster, tmp_path):
    good = cluster.run("tomcat2", f"cp -p {SERVER_XML} /root/server.xml.good && head -c 2000 {SERVER_XML} > /tmp/x "
                       f"&& cat /tmp/x > {SERVER_XML}")
    assert good.ok
    before = {t: shas(cluster, t, SERVER_XML, "/var/lib/tomcat10/bin/setenv.sh") for t in ("tomcat1", "tomcat2")}
    try:
        with pytest.raises(TcsessionError) as err:
            deploy(variant(cluster, tmp_path, channel_send_options=2), "delta", quiet=True)
        msg = str(err.value)
        assert msg.startswith(f"tomcat2:{SERVER_XML}") and "\n" not in msg
        assert {t: shas(cluster, t, SERVER_XML, "/var/lib/tomcat10/bin/setenv.sh")
                for t in ("tomcat1", "tomcat2")} == before
    finally:
        cluster.run("tomcat2", f"cp -p /root/server.xml.good {SERVER_XML}")


def test_rolling_everything_back_returns_the_hosts_to_their_packages(cluster):
    rollback_everything(cluster.inv)
    hist = history(cluster.inv)
    assert hist["tomcat1"] and all(r.rolled_back for recs in hist.values() for r in recs)
    want = hashlib.sha256(DEBIAN_SERVER_XML.read_bytes()).hexdigest()
    for t in ("tomcat1", "tomcat2"):
        assert shas(cluster, t, SERVER_XML).split()[0] == want  # Debian's file, byte for byte
        r = cluster.run(t, "systemctl is-active tomcat10; ls /var/lib/tomcat10/bin /var/lib/tomcat10/webapps/ROOT")
        assert r.stdout.split()[0] in ("inactive", "failed") and "setenv.sh" not in r.stdout
        assert "test.jsp" not in r.stdout and "WEB-INF" not in r.stdout
    r = cluster.run("nginx", "readlink /etc/nginx/sites-enabled/default; ls /etc/nginx/conf.d; systemctl is-active nginx")
    assert r.stdout.split() == ["/etc/nginx/sites-available/default", "inactive"]

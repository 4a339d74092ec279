"""The same delta deploy on Debian 11 hosts: Tomcat 9, its own paths and unit, discovered, not
assumed. From fresh hosts to a session that survives the loss of its node."""

from __future__ import annotations

import pytest

from conftest import LabHandle, write_lab_inventory
from test_delta import session_survives_a_node
from tcsession import status
from tcsession.deploy import deploy

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def cluster9(tmp_path_factory):
    path = write_lab_inventory(tmp_path_factory.mktemp("bullseye"), release="bullseye",
                               name="tcsbull", subnet="10.153.11.0/24")
    handle = LabHandle(path).up()
    try:
        yield handle
    finally:
        handle.down()


def test_tomcat9_cluster_from_fresh_hosts(cluster9):
    report = deploy(cluster9.inv, "delta", quiet=True)
    assert report.installed["tomcat1"][0] == "tomcat9"
    paths = {c.path for c in report.plan.files("tomcat1")}
    assert {"/etc/tomcat9/server.xml", "/var/lib/tomcat9/bin/setenv.sh"} <= paths
    st = status.cluster_report(cluster9.inv)
    assert st.healthy, [(h.name, h.problems) for h in st.hosts]
    facts = next(h for h in st.hosts if h.name == "tomcat2").facts
    assert facts.os["VERSION_CODENAME"] == "bullseye" and facts.packages["tomcat9"].startswith("9.0.")
    assert not deploy(cluster9.inv, "delta", quiet=True).changed


def test_tomcat9_session_survives_a_node(cluster9):
    session_survives_a_node(cluster9, cluster9.inv, unit="tomcat9")


def test_tomcat9_switches_to_msm_with_the_released_javax_jars(cluster9, tmp_path, monkeypatch):
    """Delta to msm on Tomcat 9, with the TEST STAND-IN jars (tests/standin.py; no replication
    is claimed): the released javax jars go in unconverted, memcached is installed, the
    Cluster goes, the stand-in Manager starts on Tomcat 9 and reaches both memcached nodes."""
    import standin
    from tcsession.inventory import load_inventory

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    repo = standin.write_repo(tmp_path / "repo", standin.standin_jars())
    path = tmp_path / "hosts.toml"
    path.write_text(cluster9.inv_path.read_text() + f'\n[msm]\nmaven_repo = "{repo}"\n')
    inv = load_inventory(path)
    report = deploy(inv, "msm", quiet=True)
    assert report.installed["tomcat1"] == ("memcached",)
    lib = cluster9.run("tomcat1", "ls /var/lib/tomcat9/lib").stdout.split()
    assert lib == ["memcached-session-manager-2.3.2.jar", "memcached-session-manager-tc9-2.3.2.jar",
                   "spymemcached-2.12.3.jar"]
    assert "tcsession: managed cluster" not in cluster9.run("tomcat1", "cat /etc/tomcat9/server.xml").stdout
    log = cluster9.run("tomcat2", "journalctl -u tomcat9 --no-pager -o cat | grep tcsession-standin | tail -n 1").stdout
    assert "Apache Tomcat/9.0" in log and "failoverNodes=[n2]" in log, log
    assert "n1@10.153.11.112:11211=VERSION_" in log and "n2@10.153.11.113:11211=VERSION_" in log, log
    assert not deploy(inv, "msm", quiet=True).changed

"""The same delta deploy on Debian 11 hosts: Tomcat 9, its own paths and unit, discovered, not
assumed. From fresh hosts to a session that survives the loss of its node."""

from __future__ import annotations

import pytest

from conftest import new_lab, real_msm_repo
from test_delta import session_survives_a_node
from tcsession import status
from tcsession.deploy import deploy

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def cluster9(tmp_path_factory):
    yield from new_lab(tmp_path_factory, "tcsbull", "10.153.11.0/24", release="bullseye")


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
    deploy(cluster9.inv, "delta", quiet=True)  # alone, or after the switch to msm: delta again
    session_survives_a_node(cluster9, cluster9.inv, unit="tomcat9")


def test_tomcat9_switches_from_delta_to_msm_with_the_javax_jars(cluster9, tmp_path):
    """Delta to msm on Tomcat 9 with the REAL memcached-session-manager jars (conftest.real_msm_repo):
    the javax jars go in unconverted, memcached is installed, the Cluster goes, MSM starts and
    `inv status` is healthy. Deploys delta first itself, so it passes alone and in any order."""
    from tcsession.inventory import load_inventory

    repo = real_msm_repo()
    deploy(cluster9.inv, "delta", quiet=True)  # from fresh hosts when it runs alone; else a no-op
    path = tmp_path / "hosts.toml"
    path.write_text(cluster9.inv_path.read_text() + f'\n[msm]\nmaven_repo = "{repo}"\n')
    inv = load_inventory(path)
    report = deploy(inv, "msm", quiet=True)
    assert report.changed
    assert "memcached" in report.installed.get("tomcat1", ())
    lib = cluster9.check("tomcat1", "ls /var/lib/tomcat9/lib").split()
    assert lib == ["memcached-session-manager-2.3.2.jar", "memcached-session-manager-tc9-2.3.2.jar",
                   "spymemcached-2.12.3.jar"]
    assert "tcsession: managed cluster" not in cluster9.check("tomcat1", "cat /etc/tomcat9/server.xml")
    st = status.cluster_report(inv)
    assert st.mode == "msm" and st.healthy, ([(h.name, h.problems) for h in st.hosts], st.msm_problems)
    t2 = {w: d for w, ok, d in next(h for h in st.hosts if h.name == "tomcat2").checks}
    assert t2["msm initialized"] == "finished initialization: node ids [n1], failover node ids [n2]"
    assert not deploy(inv, "msm", quiet=True).changed

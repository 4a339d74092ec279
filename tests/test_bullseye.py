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
    paths = {c.path for c in report.plan.host("tomcat1").files}
    assert {"/etc/tomcat9/server.xml", "/var/lib/tomcat9/bin/setenv.sh"} <= paths
    st = status.cluster_report(cluster9.inv)
    assert st.healthy, [(h.name, h.problems) for h in st.hosts]
    facts = next(h for h in st.hosts if h.name == "tomcat2").facts
    assert facts.os["VERSION_CODENAME"] == "bullseye" and facts.packages["tomcat9"].startswith("9.0.")
    assert not deploy(cluster9.inv, "delta", quiet=True).changed


def test_tomcat9_session_survives_a_node(cluster9):
    session_survives_a_node(cluster9, cluster9.inv, unit="tomcat9")

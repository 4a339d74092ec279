"""[firewall] backend = "nftables" on real hosts (bookworm): the cluster's ports open only to the
hosts that need them. Delta: nginx reaches Tomcat's HTTP port and this machine (the lab bridge's
address) does not; the peers' receiver and multicast get through (a session survives its Tomcat
stopped) and nginx does not reach the receiver. msm (the real jars): the Tomcats reach each
other's memcached and this machine does not. A second deploy changes nothing; rollback removes
the table and the unit. The rules' text: tests/test_firewall.py.

On the shared cluster of conftest: the firewall is deployed onto it as a configuration change, and
rolling back those deploys puts it back as it was (no table, no unit)."""

from __future__ import annotations

import socket

import pytest

from conftest import assert_fails_over, real_msm_repo, shared_cluster_for_module, variant_inventory
from tcsession import firewall
from tcsession.deploy import deploy
from tcsession.rollback import rollback

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(shared_cluster, tmp_path_factory):
    for handle in shared_cluster_for_module(shared_cluster, tmp_path_factory, "fw"):
        handle.fw = variant_inventory(handle, "fw.toml", '[firewall]\nbackend = "nftables"\n')
        handle.fw_msm = variant_inventory(handle, "msm.toml", '[firewall]\nbackend = "nftables"\n'
                                          f'[msm]\nmaven_repo = "{real_msm_repo()}"\nsticky = true\n')
        handle.fw_ids = []
        yield handle
        while handle.fw_ids:  # a test failed before rolling its firewall back: the shared cluster gets none
            handle.fw_ids.pop()
            rollback(handle.inv, quiet=True)


def reaches_from_here(address: str, port: int) -> bool:
    """A TCP connection from this machine (the bridge's address) within 2 s."""
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def reaches_from(lab, host: str, address: str, port: int) -> bool:
    out = lab.check(host, f"timeout 3 bash -c 'exec 3<>/dev/tcp/{address}/{port}' && echo open || echo closed")
    assert out.strip() in ("open", "closed"), out
    return out.strip() == "open"


def table_loaded(lab, host: str) -> bool:
    out = lab.check(host, f"nft list table {firewall.TABLE} >/dev/null 2>&1 && echo yes || echo no; "
                          f"systemctl is-enabled {firewall.UNIT} 2>/dev/null || true")
    assert out.split()[0] in ("yes", "no"), out
    return out.split()[0] == "yes"


def test_delta_ports_open_to_nginx_and_the_peers_only(lab):
    inv = lab.fw
    t1, t2 = inv.host("tomcat1"), inv.host("tomcat2")
    assert not table_loaded(lab, "tomcat1")  # the shared cluster has no firewall
    assert reaches_from_here(t1.address, 8080)  # ...so this machine reaches Tomcat
    report = deploy(inv, "delta", quiet=True)
    assert report.changed
    lab.fw_ids.append(report.deploy_id)
    assert table_loaded(lab, "tomcat1") and table_loaded(lab, "tomcat2") and not table_loaded(lab, "nginx")
    assert not reaches_from_here(t1.address, 8080) and not reaches_from_here(t2.address, inv.delta.receiver_port)
    assert reaches_from(lab, "nginx", t1.address, 8080) and not reaches_from(lab, "nginx", t1.address, 4000)
    assert reaches_from(lab, "tomcat2", t1.address, inv.delta.receiver_port)
    assert_fails_over(lab, inv)  # replication and membership between the peers get through
    assert not deploy(inv, "delta", quiet=True).changed


def test_msm_memcached_open_to_the_tomcats_only(lab):
    inv = lab.fw_msm
    t1, t2 = inv.host("tomcat1"), inv.host("tomcat2")
    report = deploy(inv, "msm", quiet=True)
    assert report.changed
    lab.fw_ids.append(report.deploy_id)
    port = inv.msm.memcached_port
    assert not reaches_from_here(t1.address, port) and not reaches_from_here(t2.address, port)
    assert not reaches_from(lab, "nginx", t1.address, port)
    assert reaches_from(lab, "tomcat2", t1.address, port) and reaches_from(lab, "tomcat1", t2.address, port)
    out = lab.check("tomcat1", f"nft list table {firewall.TABLE}")
    assert f"tcp dport {port}" in out and "4000" not in out, out  # msm's ports, not delta's
    assert_fails_over(lab, inv, mode="msm")
    assert not deploy(inv, "msm", quiet=True).changed


def test_rollback_removes_the_rules_and_the_unit(lab):
    """Rolling back the two deploys above (msm with the firewall, then delta with it) leaves the
    shared cluster as it was before them: no table, no rules file, no unit."""
    assert len(lab.fw_ids) == 2, lab.fw_ids
    while lab.fw_ids:
        assert rollback(lab.inv, quiet=True) == [lab.fw_ids.pop()]
    for t in ("tomcat1", "tomcat2"):
        assert not table_loaded(lab, t)
        out = lab.check(t, f"test -e {firewall.RULES} || test -e {firewall.UNIT_FILE} && echo left || echo gone")
        assert out.strip() == "gone", out
    assert not deploy(lab.inv, "delta", quiet=True).changed  # the shared cluster as it was

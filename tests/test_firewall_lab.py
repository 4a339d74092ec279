"""[firewall] backend = "nftables" on real hosts (bookworm): the cluster's ports open only to the
hosts that need them. Delta: nginx reaches Tomcat's HTTP port and this machine (the lab bridge's
address) does not; the peers' receiver and multicast get through (a session survives its Tomcat
stopped) and nginx does not reach the receiver. msm (the real jars): the Tomcats reach each
other's memcached and this machine does not. A second deploy changes nothing; rollback removes
the table and the unit. The rules' text: tests/test_firewall.py."""

from __future__ import annotations

import socket

import pytest

from conftest import LabHandle, assert_fails_over, real_msm_repo, rollback_everything, write_lab_inventory
from tcsession import firewall
from tcsession.deploy import deploy
from tcsession.inventory import load_inventory

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("fw")
    path = write_lab_inventory(tmp, name="tcsfw", subnet="10.153.34.0/24",
                               extra='\n[firewall]\nbackend = "nftables"\n')
    (tmp / "msm.toml").write_text(path.read_text() + f'\n[msm]\nmaven_repo = "{real_msm_repo()}"\nsticky = true\n')
    handle = LabHandle(path).up()
    try:
        yield handle
    finally:
        handle.down()


def reaches_from_here(address: str, port: int) -> bool:
    """A TCP connection from this machine (the bridge's address) within 2 s."""
    try:
        with socket.create_connection((address, port), timeout=2):
            return True
    except OSError:
        return False


def reaches_from(lab, host: str, address: str, port: int) -> bool:
    r = lab.run(host, f"timeout 3 bash -c 'exec 3<>/dev/tcp/{address}/{port}' && echo open || echo closed")
    assert r.stdout.strip() in ("open", "closed"), r.why()
    return r.stdout.strip() == "open"


def table_loaded(lab, host: str) -> bool:
    r = lab.run(host, f"nft list table {firewall.TABLE} >/dev/null 2>&1 && echo yes || echo no; "
                      f"systemctl is-enabled {firewall.UNIT} 2>/dev/null || true")
    assert r.exit == 0, r.why()
    return r.stdout.split()[0] == "yes"


def test_delta_ports_open_to_nginx_and_the_peers_only(lab):
    inv = lab.inv
    t1, t2 = inv.host("tomcat1"), inv.host("tomcat2")
    assert deploy(inv, "delta", quiet=True).changed
    assert table_loaded(lab, "tomcat1") and table_loaded(lab, "tomcat2") and not table_loaded(lab, "nginx")
    assert not reaches_from_here(t1.address, 8080) and not reaches_from_here(t2.address, inv.delta.receiver_port)
    assert reaches_from(lab, "nginx", t1.address, 8080) and not reaches_from(lab, "nginx", t1.address, 4000)
    assert reaches_from(lab, "tomcat2", t1.address, inv.delta.receiver_port)
    assert_fails_over(lab, inv)  # replication and membership between the peers get through
    assert not deploy(inv, "delta", quiet=True).changed


def test_msm_memcached_open_to_the_tomcats_only(lab):
    inv = load_inventory(lab.inv_path.with_name("msm.toml"))
    t1, t2 = inv.host("tomcat1"), inv.host("tomcat2")
    assert deploy(inv, "msm", quiet=True).changed
    port = inv.msm.memcached_port
    assert not reaches_from_here(t1.address, port) and not reaches_from_here(t2.address, port)
    assert not reaches_from(lab, "nginx", t1.address, port)
    assert reaches_from(lab, "tomcat2", t1.address, port) and reaches_from(lab, "tomcat1", t2.address, port)
    r = lab.run("tomcat1", f"nft list table {firewall.TABLE}")
    assert f"tcp dport {port}" in r.stdout and "4000" not in r.stdout, r.stdout  # msm's ports, not delta's
    assert_fails_over(lab, inv, mode="msm")
    assert not deploy(inv, "msm", quiet=True).changed


def test_rollback_removes_the_rules_and_the_unit(lab):
    rollback_everything(lab.inv)
    for t in ("tomcat1", "tomcat2"):
        assert not table_loaded(lab, t)
        r = lab.run(t, f"test -e {firewall.RULES} || test -e {firewall.UNIT_FILE} && echo left || echo gone")
        assert r.stdout.strip() == "gone", r.why()

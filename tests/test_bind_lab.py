"""Bound to the private address, on real hosts (bookworm, Tomcat 10.1; the shared cluster of
conftest, put back at the module's end): after a deploy in either mode, `ss -ntlu` on each Tomcat shows no cluster or HTTP port on a wildcard address,
sessions go on through nginx, status is healthy, and status flags a wildcard when one is back.
In msm mode the ports are checked on the msm lab (tests/test_msm_lab.py)."""

from __future__ import annotations

import pytest

from conftest import LabHandle, add_settings, shared_cluster_for_module
from tcsession import status
from tcsession.client import SessionClient
from tcsession.deploy import deploy
from tcsession.errors import TcsessionError
from tcsession.inventory import load_inventory
from tcsession.probes import is_wildcard, parse_ss
from tcsession.rollback import rollback

pytestmark = pytest.mark.lab

CLUSTER_PORTS = {8080, 4000, 11211, 45564}


@pytest.fixture(scope="module")
def lab(shared_cluster, tmp_path_factory):
    yield from shared_cluster_for_module(shared_cluster, tmp_path_factory, "bind")


def wildcard_cluster_ports(handle: LabHandle, name: str) -> list[str]:
    out = handle.check(name, "ss -Hntlu")
    listeners = parse_ss(out)
    assert any(l.port == 8080 for l in listeners), out  # Tomcat does listen
    return sorted(f"{l.proto} {l.address}:{l.port}" for l in listeners
                  if l.port in CLUSTER_PORTS and is_wildcard(l.address))


def sessions_go_on(inv) -> None:
    client = SessionClient(inv.nginx.address, inv.nginx.http_port)
    for _ in range(10):
        client.request()
    assert client.run.ok and client.run.last_count == 10, client.run.to_dict()
    report = status.cluster_report(inv, session_requests=5)
    assert report.healthy, [(h.name, h.problems) for h in report.hosts]


def test_delta_binds_every_port_to_the_node(lab):
    assert not deploy(lab.inv, "delta", quiet=True).changed  # the shared cluster: deployed from fresh hosts
    for t in ("tomcat1", "tomcat2"):
        assert wildcard_cluster_ports(lab, t) == [], t
        # curl exits 7 (connection refused) and prints 000: not on loopback either, only the node's address
        out = lab.check(t, "curl -s -o /dev/null -w '%{http_code}' -m 2 http://127.0.0.1:8080/test.jsp; test $? -eq 7")
        assert out.strip() == "000"
        out = lab.check(t, f"curl -s -o /dev/null -w '%{{http_code}}' -m 2 http://{lab.inv.host(t).address}:8080/test.jsp")
        assert out.strip() == "200"
    sessions_go_on(lab.inv)


def test_status_flags_a_connector_back_on_the_wildcard(lab):
    t = lab.inv.host("tomcat2")
    r = lab.run("tomcat2", f"sed -i 's/ address=\"{t.address}\" \\/>/ \\/>/; s/ address=\"{t.address}\"$//' "
                "/etc/tomcat10/server.xml && systemctl restart tomcat10 && "
                f"for i in $(seq 1 120); do ss -Hntl | grep -q ':8080 ' && exit 0; sleep 0.5; done; exit 1")
    assert r.ok, r.why()
    assert wildcard_cluster_ports(lab, "tomcat2") != []
    report = status.cluster_report(lab.inv, session_requests=0)
    problems = next(h for h in report.hosts if h.name == "tomcat2").problems
    assert any("wildcard address: HTTP" in p and ":8080" in p for p in problems), problems
    assert deploy(lab.inv, "delta", quiet=True).changed  # puts the address back
    assert wildcard_cluster_ports(lab, "tomcat2") == []


def test_without_the_test_page(lab):
    """[app] test_page = false on the deployed lab, with a setting change (so the Tomcats restart
    and wait for any answer): the page goes, status skips the session check, check_path is
    requested instead; rollback puts the page back byte for byte."""
    page = "/var/lib/tomcat10/webapps/ROOT/test.jsp"
    before = {t: lab.check(t, f"sha256sum {page}").split()[0] for t in ("tomcat1", "tomcat2")}
    base = lab.inv_path.read_text().replace("test_page = true", "test_page = false")
    path = lab.tmp / "nopage.toml"
    path.write_text(add_settings(base, "[delta]\nchannel_send_options = 2\n"))
    inv = load_inventory(path)
    report = deploy(inv, "delta", quiet=True)
    assert report.changed
    for t in ("tomcat1", "tomcat2"):
        r = lab.run(t, f"test ! -e {page} && systemctl is-active tomcat10")
        assert r.ok, r.why()
    st = status.cluster_report(inv, session_requests=5)
    assert st.session is None and "skipped" in st.session_note and st.healthy, [(h.name, h.problems) for h in st.hosts]
    path.write_text(add_settings(base.replace("[app]\n", '[app]\ncheck_path = "/"\n'), "[delta]\nchannel_send_options = 2\n"))
    st = status.cluster_report(load_inventory(path), session_requests=3)
    assert st.session is not None and st.session.path == "/" and st.session.ok and st.healthy, st.session.to_dict()
    rollback(inv, quiet=True)
    for t in ("tomcat1", "tomcat2"):
        assert lab.check(t, f"sha256sum {page}").split()[0] == before[t]
    sessions_go_on(lab.inv)


# msm: every port bound to the node is checked on the msm lab (tests/test_msm_lab.py::
# test_msm_binds_every_port_to_the_node, deployed in msm mode there already); sessions going on
# and status healthy in msm mode: tests/test_msm_real.py (the real jars).


def test_the_log_gate_stops_the_rolling_restart(lab):
    """tomcat1 carries an application whose Manager class is missing (the ROOT test page still
    answers 200, so the wait passes): a deploy that restarts both Tomcats stops at tomcat1's
    restart naming the line, and tomcat2 is not restarted; the next deploy finishes it."""
    deploy(lab.inv, "delta", quiet=True)  # from whatever the module left (a no-op when delta)
    changed = lab.tmp / "gate.toml"
    changed.write_text(add_settings(lab.inv_path.read_text(), "[delta]\nchannel_send_options = 2\n"))
    inv = load_inventory(changed)
    app = "/var/lib/tomcat10/webapps/gate"
    r = lab.run("tomcat1", f"mkdir -p {app}/META-INF && printf '%s\\n' "
                "'<Context><Manager className=\"org.example.MissingManager\"/></Context>' > "
                f"{app}/META-INF/context.xml && echo ok > {app}/index.html")
    assert r.ok, r.why()
    pid2 = lab.pid("tomcat2", "tomcat10")
    try:
        with pytest.raises(TcsessionError) as e:
            deploy(inv, "delta", quiet=True)
        msg = str(e.value)
        print("\ngate:", msg)
        assert "tomcat1: tomcat10 restarted but logged" in msg and "MissingManager" in msg, msg
        assert "next Tomcat was not touched" in msg
        assert lab.pid("tomcat2", "tomcat10") == pid2
    finally:
        assert lab.run("tomcat1", f"rm -rf {app}").ok
    assert deploy(inv, "delta", quiet=True).changed  # tomcat2's restart was still owed
    assert lab.pid("tomcat2", "tomcat10") != pid2
    sessions_go_on(inv)
    assert deploy(lab.inv, "delta", quiet=True).changed  # the shared cluster's settings back

"""Scale out 2 -> 3 in msm mode (memcached-session-manager, the REAL jars, sticky), on real hosts
(bookworm, Tomcat 10.1), under a bounded load through nginx (10 sessions, 20 requests/s): 0 failed,
0 lost. The new host gets Tomcat and memcached; every Tomcat's memcachedNodes then names three
nodes (rolled in waves), nginx puts the new Tomcat in service last, and a session created before it
joined is served by it (asked directly: MSM loads it from the memcached node its id names).
Scale in is refused in msm mode (tests/test_scale.py): the removed host's memcached holds other
Tomcats' backups."""

from __future__ import annotations

import time

import pytest

from conftest import real_msm_repo, wait_answered
from tcsession import status
from tcsession.client import SessionClient, parse_session_id
from tcsession.deploy import deploy
from tcsession.inventory import load_inventory
from tcsession.load import Load
from test_scale_lab import scale_lab

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from scale_lab(tmp_path_factory, "tcsscalm", "10.153.36.0/24",
                         f'\n[msm]\nmaven_repo = "{real_msm_repo()}"\nsticky = true\n')


def memcached_nodes(lab, host: str) -> str:
    return lab.check(host, "grep -o 'memcachedNodes=\"[^\"]*\"' /var/lib/tomcat10/webapps/ROOT/META-INF/context.xml").strip()


def test_msm_scale_out_while_serving(lab):
    two = load_inventory(lab.inv_path.with_name("two.toml"))
    assert [t.name for t in two.tomcats] == ["tomcat1", "tomcat2"]
    assert deploy(two, "msm", quiet=True).changed
    out = lab.check("tomcat3", "dpkg-query -W -f='${db:Status-Abbrev}' tomcat10 memcached 2>/dev/null; test $? -le 1")
    assert "ii" not in out, out
    assert "n3:" not in memcached_nodes(lab, "tomcat1")
    early = SessionClient(two.nginx.address, two.nginx.http_port, mode="msm")
    for _ in range(5):
        early.request()
        time.sleep(0.3)  # each request's backup lands before the next (MSM backs up asynchronously)
    assert early.run.ok and early.run.last_count == 5, early.run.to_dict()
    pids = {t.name: lab.pid(t.name, "tomcat10") for t in two.tomcats}

    three = lab.inv
    with Load(three.nginx.address, three.nginx.http_port, sessions=10, rate=20, mode="msm") as load:
        wait_answered(load)
        report = deploy(three, "msm", quiet=True)
        wait_answered(load)
    res = load.result
    print(f"\nmsm scale out 2 -> 3: requests={res.requests} failed={res.failed} lost={res.lost_updates}")
    assert report.changed and res.requests >= 40 and (res.failed, res.lost_updates) == (0, 0), res.errors[:5]
    for t in two.tomcats:  # the old Tomcats restarted with the third node in their lists
        assert lab.pid(t.name, "tomcat10") != pids[t.name]
        assert "n3:" in memcached_nodes(lab, t.name), memcached_nodes(lab, t.name)
    assert "n1:" in memcached_nodes(lab, "tomcat3")

    # the new Tomcat serves the session created before it joined (around nginx)
    t3 = three.host("tomcat3")
    early.host, early.port = t3.address, t3.http_port
    early.request()
    assert early.run.ok and early.run.last_count == 6 and early.run.last_node == "tomcat3", early.run.to_dict()
    assert parse_session_id(early.run.session_ids[-1], "msm").base == parse_session_id(early.run.session_ids[0], "msm").base
    health = status.cluster_report(three, session_requests=5)
    assert health.healthy, [(h.name, h.problems) for h in health.hosts]
    served = set()
    for _ in range(30):  # nginx now sends new sessions to all three
        c = SessionClient(three.nginx.address, three.nginx.http_port, mode="msm")
        c.request()
        served |= set(c.run.nodes)
    assert served == {"tomcat1", "tomcat2", "tomcat3"}, served
    assert not deploy(three, "msm", quiet=True).changed

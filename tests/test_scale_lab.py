"""Scale out 2 -> 3 and in 3 -> 2 while serving, on real hosts (bookworm, delta, multicast), under a
bounded load through nginx (10 sessions, 20 requests/s): 0 failed, 0 lost, both ways. The new
node is installed, started while nginx has it marked down, gets the sessions from its peers, and
only then is put in service; it then serves a session created before it joined (asked directly).
Removed (`remove = true`): out of nginx first, then stopped and disabled, recorded; rollback
starts it again. Then the same with static membership (every peer's list rolled), on the same
hosts (one 3-Tomcat lab for the module). The plans: tests/test_scale.py."""

from __future__ import annotations


import pytest

from conftest import MULTICAST, add_settings, running_lab, wait_answered, write_lab_inventory
from tcsession import status
from tcsession.client import SessionClient, parse_session_id
from tcsession.deploy import deploy
from tcsession.inventory import load_inventory
from tcsession.load import Load
from tcsession.rollback import rollback

pytestmark = pytest.mark.lab


def scale_lab(tmp_path_factory, name: str, subnet: str, extra: str = ""):
    """Fresh hosts for a scale test: the 3-Tomcat inventory (the lab's), and beside it two.toml
    (without tomcat3) and removed.toml (tomcat3 with remove = true); yields the running lab and
    takes it down after."""
    tmp = tmp_path_factory.mktemp(name)
    three = write_lab_inventory(tmp, tomcats=3, name=name, subnet=subnet, extra=extra)
    text = three.read_text()
    start = text.index("[tomcat.tomcat3]")
    end = text.index("\n\n", start) + 2
    (tmp / "two.toml").write_text(text[:start] + text[end:])
    (tmp / "removed.toml").write_text(text.replace("[tomcat.tomcat3]\n", "[tomcat.tomcat3]\nremove = true\n"))
    yield from running_lab(three)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    yield from scale_lab(tmp_path_factory, "tcsscale", "10.153.35.0/24", extra=MULTICAST)


def active(lab, host: str) -> str:
    # is-active / is-enabled exit non-zero for inactive / disabled: their answers are the output
    out = lab.check(host, "systemctl is-active tomcat10 || true; systemctl is-enabled tomcat10 || true")
    assert len(out.split()) == 2, out
    return " ".join(out.split())


def deploy_under_load(inv, what: str):
    """`inv deploy` of `inv` under 10 sessions at 20 requests/s through nginx (from when every
    session has been answered twice until every session has been answered twice more after the
    deploy: at least 40 requests, every session answered on both sides of it; a scale-in that
    restarts no Tomcat takes about 2.5 s); the report and the load's result, printed."""
    with Load(inv.nginx.address, inv.nginx.http_port, sessions=10, rate=20) as load:
        wait_answered(load)
        report = deploy(inv, "delta", quiet=True)
        wait_answered(load)
    record(what, load.result)
    return report, load.result


def record(what: str, r) -> None:
    print(f"\n{what}: requests={r.requests} failed={r.failed} lost={r.lost_updates}")


def test_scale_out_then_in_while_serving(lab):
    two = load_inventory(lab.inv_path.with_name("two.toml"))
    assert [t.name for t in two.tomcats] == ["tomcat1", "tomcat2"]
    assert deploy(two, "delta", quiet=True).changed
    assert lab.check("tomcat3", "dpkg-query -W -f='${db:Status-Abbrev}' tomcat10 2>/dev/null; test $? -le 1").strip() != "ii"
    early = SessionClient(two.nginx.address, two.nginx.http_port)
    for _ in range(5):
        early.request()
    assert early.run.ok and early.run.last_count == 5, early.run.to_dict()

    # out: 2 -> 3 under load
    three = lab.inv
    report, r = deploy_under_load(three, "scale out 2 -> 3")
    assert report.changed and r.requests >= 40 and (r.failed, r.lost_updates) == (0, 0), r.errors[:5]
    # the new node serves a session created before it joined (asked directly, around nginx)
    t3 = three.host("tomcat3")
    early.host, early.port = t3.address, t3.http_port
    early.request()
    assert early.run.ok and early.run.last_count == 6 and early.run.last_node == "tomcat3", early.run.to_dict()
    assert parse_session_id(early.run.session_ids[-1]).base == parse_session_id(early.run.session_ids[0]).base
    health = status.cluster_report(three, session_requests=5)
    assert health.healthy, [(h.name, h.problems) for h in health.hosts]
    served = set()
    for _ in range(30):  # nginx now sends new sessions to all three
        c = SessionClient(three.nginx.address, three.nginx.http_port)
        c.request()
        served |= set(c.run.nodes)
    assert served == {"tomcat1", "tomcat2", "tomcat3"}, served
    assert not deploy(three, "delta", quiet=True).changed

    # in: 3 -> 2 under load (remove = true)
    removed = load_inventory(lab.inv_path.with_name("removed.toml"))
    report, r = deploy_under_load(removed, "scale in 3 -> 2")
    assert report.changed and r.requests >= 40 and (r.failed, r.lost_updates) == (0, 0), r.errors[:5]
    assert active(lab, "tomcat3") == "inactive disabled"
    site = lab.check("nginx", "cat /etc/nginx/conf.d/tcsession.conf")
    assert t3.address not in site and three.host("tomcat1").address in site
    early.host, early.port = removed.nginx.address, removed.nginx.http_port  # the early session goes on
    early.request()
    assert early.run.ok and early.run.last_count == 7 and early.run.last_node != "tomcat3", early.run.to_dict()
    health = status.cluster_report(removed, session_requests=5)
    assert health.healthy, [(h.name, h.problems) for h in health.hosts]
    assert not deploy(removed, "delta", quiet=True).changed

    # rollback of the removal: tomcat3 back, in nginx again
    assert rollback(removed, quiet=True) == [report.deploy_id]
    assert active(lab, "tomcat3") == "active enabled"
    assert t3.address in lab.check("nginx", "cat /etc/nginx/conf.d/tcsession.conf")


def static_inventory(lab, name: str):
    """One of the lab's inventories (three: the lab's own) with static membership, beside it."""
    src = lab.inv_path if name == "three" else lab.inv_path.with_name(f"{name}.toml")
    path = lab.inv_path.with_name(f"static-{name}.toml")
    path.write_text(add_settings(src.read_text(), '[delta]\nmembership = "static"\n'))
    return load_inventory(path)


def static_members(lab, host: str) -> list[str]:
    return lab.check(host, "set -o pipefail; grep -o 'host=\"[0-9.]*\"' /etc/tomcat10/server.xml | sort").split()


def test_scale_out_and_in_with_static_membership_rolls_every_peers_list(lab):
    """On the same hosts after the multicast test (its own fresh lab before: one lab fewer): the
    two-node cluster switched to static membership, tomcat3 (Tomcat installed, as the multicast
    test left it) stopped and outside the inventory; then added again with static membership."""
    lab.check("tomcat3", "systemctl stop tomcat10")
    two = static_inventory(lab, "two")
    a1, a2, a3 = (f'host="{lab.inv.host(t).address}"' for t in ("tomcat1", "tomcat2", "tomcat3"))
    assert deploy(two, "delta", quiet=True, switch_membership=True).changed  # from multicast: the switch, no load
    assert static_members(lab, "tomcat1") == [a2]
    early = SessionClient(two.nginx.address, two.nginx.http_port)
    for _ in range(5):
        early.request()
    assert early.run.ok and early.run.last_count == 5, early.run.to_dict()
    pids = {t.name: lab.pid(t.name, "tomcat10") for t in two.tomcats}

    three = static_inventory(lab, "three")
    report, r = deploy_under_load(three, "static membership, scale out 2 -> 3")
    assert report.changed and r.requests >= 40 and (r.failed, r.lost_updates) == (0, 0), r.errors[:5]
    for t in two.tomcats:  # each peer's list now names the new node: restarted, in waves
        assert lab.pid(t.name, "tomcat10") != pids[t.name]
        assert a3 in static_members(lab, t.name)
    assert static_members(lab, "tomcat3") == sorted([a1, a2])
    t3 = three.host("tomcat3")
    early.host, early.port = t3.address, t3.http_port
    early.request()
    assert early.run.ok and early.run.last_count == 6 and early.run.last_node == "tomcat3", early.run.to_dict()
    health = status.cluster_report(three, session_requests=5)
    assert health.healthy, [(h.name, h.problems) for h in health.hosts]
    assert not deploy(three, "delta", quiet=True).changed

    # in: 3 -> 2, tomcat3 out of nginx, stopped, then out of both peers' lists (restarted)
    pids = {t.name: lab.pid(t.name, "tomcat10") for t in two.tomcats}
    removed = static_inventory(lab, "removed")
    report, r = deploy_under_load(removed, "static membership, scale in 3 -> 2")
    assert report.changed and r.requests >= 40 and (r.failed, r.lost_updates) == (0, 0), r.errors[:5]
    assert active(lab, "tomcat3") == "inactive disabled"
    for t in two.tomcats:
        assert lab.pid(t.name, "tomcat10") != pids[t.name]
    assert static_members(lab, "tomcat1") == [a2]
    assert static_members(lab, "tomcat2") == [a1]
    early.host, early.port = removed.nginx.address, removed.nginx.http_port
    early.request()
    assert early.run.ok and early.run.last_count == 7 and early.run.last_node != "tomcat3", early.run.to_dict()
    health = status.cluster_report(removed, session_requests=5)
    assert health.healthy, [(h.name, h.problems) for h in health.hosts]
    assert not deploy(removed, "delta", quiet=True).changed

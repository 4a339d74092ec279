"""Scale out and in while serving (issue 12), planned from facts captured on deployed lab hosts
(tomcat2's facts stand in for tomcat3): a joining Tomcat stays marked down in nginx until its own
start (it serves and holds the sessions), in every drain before it too; a Tomcat with
`remove = true` leaves nginx's site and, with static membership, the peers' lists, and is stopped
once nginx no longer sends to it (its services recorded first). Real hosts: test_scale_lab.py."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from tcsession import lab, nginx, rollout
from tcsession import plan as planning
from tcsession.errors import TcsessionError
from tcsession.facts import parse_facts
from tcsession.inventory import parse_inventory
from tcsession.modes import DELTA
from tcsession.steps import ApplyNginx, RestartTomcat, StopService, WriteFiles
from test_waves import with_deployed_site

DATA = Path(__file__).parent / "data" / "facts"


def inventory(text_extra: str = "", tomcats: int = 3, remove: str = ""):
    text = lab.render_inventory("tcsscale", "bookworm", tomcats, "10.153.0.0/24")
    if remove:
        text = text.replace(f"[tomcat.{remove}]\n", f"[tomcat.{remove}]\nremove = true\n")
    return parse_inventory(text + "\n" + text_extra, Path("/nonexistent/hosts.toml"))


def stopped(f):
    return dataclasses.replace(f, active={**f.active, f.tomcat.unit: "inactive"})


@pytest.fixture
def two_running():
    """A deployed 2-node cluster (its nginx site lists tomcat1 and tomcat2), tomcat3 installed
    and not running."""
    t1 = parse_facts((DATA / "deployed-tomcat1.txt").read_text())
    t2 = parse_facts((DATA / "deployed-tomcat2.txt").read_text())
    return {"nginx": parse_facts((DATA / "deployed-nginx.txt").read_text()), "tomcat1": t1, "tomcat2": t2,
            "tomcat3": stopped(t2)}


def downs(site: bytes) -> set[str]:
    return {line.split()[1] for line in site.decode().splitlines() if line.strip().startswith("server") and " down" in line}


def test_a_joining_tomcat_stays_down_in_nginx_until_it_started(two_running):
    inv = inventory()
    p = planning.plan(inv, two_running, "delta")
    (apply_nginx,) = [s for s in p.steps if isinstance(s, ApplyNginx)]
    assert downs(apply_nginx.site) == {"10.153.0.114:8080"} and "tomcat3 marked down" in apply_nginx.why
    # the site written (and recorded) is the full one; the joining node's start puts it back
    (site_change,) = [c for s in p.steps if isinstance(s, WriteFiles) and s.host == "nginx" for c in s.changes
                      if c.path == nginx.SITE]
    assert not downs(site_change.after) and b"10.153.0.114:8080" in site_change.after
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [s.host for s in restarts] == ["tomcat3"]  # multicast: the peers' files do not change
    (r,) = restarts
    assert downs(r.drain.drained) == {"10.153.0.114:8080"} and r.drain.site == site_change.after
    assert r.waits_for_state and r.members == 2  # it gets the sessions from its peers, sees both
    assert p.steps.index(apply_nginx) < p.steps.index(r)


def test_with_static_membership_every_drain_before_its_start_keeps_it_down(two_running):
    inv = inventory('[delta]\nmembership = "static"\n')
    p = planning.plan(inv, two_running, "delta")
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [s.host for s in restarts] == ["tomcat1", "tomcat2", "tomcat3"]  # the peers' lists change
    t3 = "10.153.0.114:8080"
    assert downs(restarts[0].drain.drained) == {"10.153.0.112:8080", t3} and downs(restarts[0].drain.site) == {t3}
    assert downs(restarts[1].drain.drained) == {"10.153.0.113:8080", t3} and downs(restarts[1].drain.site) == {t3}
    assert downs(restarts[2].drain.drained) == {t3} and not downs(restarts[2].drain.site)


def test_a_tomcat_its_package_started_joins_too_and_no_wave_leans_on_it(two_running):
    """Debian starts tomcat10 on install, with its stock server.xml: running, but not serving the
    cluster (found in the lab: in msm mode, nginx sent drained nodes' sessions to it and they were
    lost). It is marked down until its own restart, and with static membership the peers restart
    one at a time around the two that serve, as if it were not running."""
    stock = (Path(__file__).parent / "data/debian-bookworm-tomcat10/server.xml").read_bytes()
    t = two_running["tomcat2"]
    fresh = dataclasses.replace(t, files={**t.files, "/etc/tomcat10/server.xml": dataclasses.replace(
        t.files["/etc/tomcat10/server.xml"], content=stock)})
    assert fresh.active["tomcat10"] == "active"
    facts = {**two_running, "tomcat3": fresh}
    for extra in ("", '[delta]\nmembership = "static"\n'):
        p = planning.plan(inventory(extra), facts, "delta")
        (apply_nginx,) = [s for s in p.steps if isinstance(s, ApplyNginx)]
        assert downs(apply_nginx.site) == {"10.153.0.114:8080"}, extra
        restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
        assert restarts[-1].host == "tomcat3" and not downs(restarts[-1].drain.site)
        assert all("10.153.0.114:8080" in downs(r.drain.drained) for r in restarts)
        assert [r.wave for r in restarts] == list(range(1, len(restarts) + 1))


def test_who_joins_a_serving_cluster(two_running):
    """Not in nginx's site as it is, while a node it lists runs: joining if it is not running, or
    restarts in this plan; one that runs and will not restart (configured, only the site missed
    it: a deploy stopped before nginx's reload) keeps serving and is put in service at once."""
    inv, site = inventory(), two_running["nginx"].content(nginx.SITE)
    assert rollout.joining_nodes(inv, site, {"tomcat1", "tomcat2"}, set()) == ["tomcat3"]
    assert rollout.joining_nodes(inv, site, {"tomcat1", "tomcat2", "tomcat3"}, {"tomcat3"}) == ["tomcat3"]
    assert rollout.joining_nodes(inv, site, {"tomcat1", "tomcat2", "tomcat3"}, {"tomcat1"}) == []
    assert rollout.joining_nodes(inv, site, {"tomcat3"}, {"tomcat3"}) == []  # nobody serves: no cluster to join
    assert rollout.joining_nodes(inv, None, {"tomcat1"}, {"tomcat1", "tomcat2"}) == []  # no site yet


def test_a_first_deploy_has_nobody_joining(two_running):
    facts = {n: stopped(f) if n != "nginx" else f for n, f in two_running.items()}
    p = planning.plan(inventory(), facts, "delta")
    assert all(s.site is None for s in p.steps if isinstance(s, ApplyNginx))


@pytest.fixture
def three_running(two_running):
    inv = inventory()
    return {**with_deployed_site(inv, two_running), "tomcat3": two_running["tomcat2"]}


def test_a_removed_tomcat_leaves_nginx_then_stops_recorded(three_running):
    inv = inventory(remove="tomcat3")
    assert [t.name for t in inv.tomcats] == ["tomcat1", "tomcat2"] and [h.name for h in inv.removed] == ["tomcat3"]
    p = planning.plan(inv, three_running, "delta", deploy_id="20261201T100000Z-abcdef", time="t")
    (site_change,) = [c for s in p.steps if isinstance(s, WriteFiles) and s.host == "nginx" for c in s.changes
                      if c.path == nginx.SITE]
    assert b"10.153.0.114" not in site_change.after
    (record,) = [s for s in p.steps if isinstance(s, WriteFiles) and s.host == "tomcat3"]
    assert not record.changes and record.manifest.was_active("tomcat10")  # rollback starts it again
    (stop,) = [s for s in p.steps if isinstance(s, StopService)]
    (apply_nginx,) = [s for s in p.steps if isinstance(s, ApplyNginx)]
    assert stop.host == "tomcat3" and stop.unit == "tomcat10" and p.steps.index(apply_nginx) < p.steps.index(stop)
    assert not [s for s in p.steps if isinstance(s, RestartTomcat)]  # multicast: the peers do not change
    # once stopped, the same inventory changes nothing
    done = {**with_deployed_site(inv, three_running), "tomcat3": stopped(three_running["tomcat3"])}
    assert planning.plan(inv, done, "delta").empty


def test_with_static_membership_the_peers_restart_after_the_removed_one_stopped(three_running):
    inv = inventory('[delta]\nmembership = "static"\n', remove="tomcat3")
    p = planning.plan(inv, three_running, "delta")
    (stop,) = [s for s in p.steps if isinstance(s, StopService)]
    restarts = [s for s in p.steps if isinstance(s, RestartTomcat)]
    assert [s.host for s in restarts] == ["tomcat1", "tomcat2"] and p.steps.index(stop) < p.steps.index(restarts[0])
    for c in p.files("tomcat1"):
        if c.path.endswith("server.xml"):
            assert b"10.153.0.114" not in c.after and b"10.153.0.113" in c.after


def test_removal_is_refused_in_msm_mode_and_when_too_few_stay(three_running):
    with pytest.raises(TcsessionError, match=r"\[tomcat.tomcat3\] remove = true in msm mode: refused"):
        planning.retire(inventory(remove="tomcat3"), three_running, planning.mode_named("msm"))
    text = lab.render_inventory("tcsscale", "bookworm", 2).replace("[tomcat.tomcat2]\n", "[tomcat.tomcat2]\nremove = true\n")
    with pytest.raises(TcsessionError, match="remove = true leaves 1 Tomcat"):
        parse_inventory(text, Path("/nonexistent/hosts.toml"))

"""`upgrade` on real hosts that start from bookworm's older packages (tomcat10 10.1.55, openjdk-17
17.0.19, memcached 1.6.18-1, nginx +deb12u9; kept in the lab's apt cache beside bookworm-security's
newer ones: tcsession.lab.OLDER_PACKAGES), under a bounded client load through nginx (5 sessions,
20 requests/s):

- delta: Tomcat 10.1.55 -> 10.1.60 with 0 failed requests, 0 lost updates, every Tomcat's PID
  changed, status healthy with no update left for it; `rollback` back to 10.1.55 the same way;
- a Tomcat major change asked for (`--to tomcat10=11.0.15-1`): refused before any change (the
  packages and every service's PID as before);
- msm with the real jars: the JRE, Tomcat and memcached updated (memcached restarted inside its
  host's drained Tomcat restart, one host at a time) with 0 lost, and rolled back the same way;
- nginx last: its package restarts it (the requests failed meanwhile are printed, not asserted);
- a restart owed (the JRE updated under a running Tomcat by hand) shown by status and done by
  upgrade, drained.

One lab for the module (2 Tomcats); 8 Tomcats in waves behind `-m measure` (its own lab)."""

from __future__ import annotations

import pytest

from conftest import new_lab, real_msm_repo, variant_inventory, wait_answered
from tcsession import lab, status
from tcsession.deploy import deploy
from tcsession.errors import TcsessionError
from tcsession.load import Load
from tcsession.rollback import rollback
from tcsession.steps import RestartTomcat, UpgradeService
from tcsession.upgrade import upgrade

pytestmark = pytest.mark.lab

OLD, NEW = "10.1.55-1~deb12u1", "10.1.60-1~deb12u1"
JRE_OLD, JRE_NEW = "17.0.19+10-1~deb12u2", "17.0.21.1+2-1~deb12u1"
MC_OLD, MC_NEW = "1.6.18-1", "1.6.18-1+deb12u1"
SIZES = {2: ("tcsupg", "10.153.80.0/24"), 8: ("tcsupg8", "10.153.81.0/24")}  # (lab, subnet) per size


def older_packages(handle) -> None:
    for h in handle.inv.hosts:
        handle.check(h.name, lab.older_install_script("bookworm", h.role))


def lab_of(tmp_path_factory, size: int):
    name, subnet = SIZES[size]
    gen = new_lab(tmp_path_factory, name, subnet, tomcats=size, deploy_mode="delta", prepare=older_packages)
    handle = next(gen)
    handle.tomcats = [t.name for t in handle.inv.tomcats]
    try:
        yield handle
    finally:
        gen.close()


@pytest.fixture(scope="module")
def old_lab(tmp_path_factory):
    yield from lab_of(tmp_path_factory, 2)


@pytest.fixture(scope="module")
def old_lab8(tmp_path_factory):
    yield from lab_of(tmp_path_factory, 8)


def versions(handle, name: str) -> dict[str, str]:
    """Package -> installed version (dpkg-query exits 1 for the names a host lacks, hence `|| true`:
    every caller asserts the versions it relies on)."""
    out = handle.check(name, "dpkg-query -W -f='${Package} ${Version}\\n' tomcat10 tomcat10-common libtomcat10-java "
                             "openjdk-17-jre-headless memcached nginx nginx-common 2>/dev/null || true")
    return dict(line.split() for line in out.splitlines() if len(line.split()) == 2)


def pids(handle, units=("tomcat10",)) -> dict[tuple[str, str], str]:
    return {(t, u): handle.pid(t, u) for t in handle.tomcats for u in units}


def under_load(handle, inv, action, mode="delta"):
    with Load(inv.nginx.address, sessions=5, rate=20, mode=mode) as load:
        wait_answered(load)
        out = action()
        wait_answered(load)
    print(f"\n{action.__name__ if hasattr(action, '__name__') else 'action'}: {load.result.line()}")
    assert load.result.requests > 50
    assert (load.result.failed, load.result.lost_updates) == (0, 0), load.result.errors
    return out


def healthy(inv, mode: str):
    report = status.cluster_report(inv, session_requests=3)
    assert report.mode == mode and report.healthy, [(h.name, h.problems) for h in report.hosts]
    return report


def test_delta_tomcat_patch_rolls_through_under_load_and_back(old_lab):
    tomcat_patch_under_load_and_back(old_lab)


@pytest.mark.measure  # 8 Tomcats: the upgrade in waves (two of four) and its rollback, under load
def test_delta_tomcat_patch_at_8_in_waves_under_load_and_back(old_lab8):
    import time

    started = time.monotonic()
    plans = tomcat_patch_under_load_and_back(old_lab8)
    waves = [s.wave for s in plans[0].steps if isinstance(s, RestartTomcat)]
    print(f"\n8 Tomcats: upgrade and rollback under load in {time.monotonic() - started:.1f} s; waves {waves}")
    assert waves == [1] * 4 + [2] * 4  # a running cluster: two halves


def tomcat_patch_under_load_and_back(old_lab) -> list:
    inv = old_lab.inv
    assert all(versions(old_lab, t)["tomcat10"] == OLD for t in old_lab.tomcats)
    before = pids(old_lab)
    plans: list = []
    run_id = under_load(old_lab, inv, lambda: upgrade(inv, only="tomcat", quiet=True, plans=plans))
    assert run_id
    after = pids(old_lab)
    assert all(after[k] != before[k] for k in before), (before, after)
    assert all(versions(old_lab, t)["tomcat10"] == NEW and versions(old_lab, t)["libtomcat10-java"] == NEW
               for t in old_lab.tomcats)
    assert all(versions(old_lab, t)["openjdk-17-jre-headless"] == JRE_OLD for t in old_lab.tomcats)  # --only
    restarts = [s for s in plans[0].steps if isinstance(s, RestartTomcat)]
    assert [s.host for s in restarts] == old_lab.tomcats and all(s.drain and s.waits_for_state for s in restarts)
    report = healthy(inv, "delta")
    for h in report.hosts:
        if h.role == "tomcat":
            assert not any("tomcat10 " in d for w, d in h.notes if w == "updates"), h.notes
    # a second upgrade of the same group has nothing to do
    assert upgrade(inv, only="tomcat", quiet=True) is None

    before = pids(old_lab)
    under_load(old_lab, inv, lambda: rollback(inv, quiet=True))
    after = pids(old_lab)
    assert all(after[k] != before[k] for k in before), (before, after)
    assert all(versions(old_lab, t)["tomcat10"] == OLD for t in old_lab.tomcats)
    healthy(inv, "delta")
    return plans


def test_a_tomcat_major_change_is_refused_before_any_change(old_lab):
    before = {t: versions(old_lab, t) for t in old_lab.tomcats}, pids(old_lab)
    assert all(v["tomcat10"] == OLD and v["openjdk-17-jre-headless"] == JRE_OLD for v in before[0].values()), before
    with pytest.raises(TcsessionError, match="not a patch but a change of Tomcat line.*10.1 -> 11.0"):
        upgrade(old_lab.inv, to="tomcat10=11.0.15-1", quiet=True)
    assert ({t: versions(old_lab, t) for t in old_lab.tomcats}, pids(old_lab)) == before


def test_a_restart_owed_is_shown_then_done_drained(old_lab):
    inv = old_lab.inv
    t = old_lab.tomcats[0]
    old_lab.check(t, f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q openjdk-17-jre-headless={JRE_NEW} >/dev/null")
    try:
        report = status.cluster_report(inv, session_requests=0)
        notes = {h.name: h.notes for h in report.hosts}
        assert any(w == "restart owed" and "openjdk-17-jre-headless" in d for w, d in notes[t]), notes[t]
        before = pids(old_lab)
        plans: list = []
        assert upgrade(inv, only="nginx", quiet=True, plans=plans)  # nginx's update, and the restart owed
        after = pids(old_lab)
        assert after[(t, "tomcat10")] != before[(t, "tomcat10")]
        assert all(after[k] == before[k] for k in before if k[0] != t)  # owing nothing, not restarted
        restarted = [s for s in plans[0].steps if isinstance(s, RestartTomcat)]
        assert [s.host for s in restarted] == [t] and restarted[0].drain is not None and not restarted[0].upgrades
        report = status.cluster_report(inv, session_requests=0)
        assert not any(w == "restart owed" for h in report.hosts for w, _ in h.notes)
    finally:  # back to the older JRE and nginx (the nginx update was the plan's too)
        rollback(inv, quiet=True)
        old_lab.check(t, f"DEBIAN_FRONTEND=noninteractive apt-get install -y -q --allow-downgrades "
                         f"openjdk-17-jre-headless={JRE_OLD} >/dev/null && systemctl restart tomcat10")


def test_msm_jre_tomcat_and_memcached_roll_through_under_load_and_back(old_lab):
    inv = variant_inventory(old_lab, "msm.toml", f'[msm]\nmaven_repo = "{real_msm_repo()}"\n')
    assert deploy(inv, "msm", quiet=True, switch=True).changed
    healthy(inv, "msm")
    units = ("tomcat10", "memcached")
    before = pids(old_lab, units)
    plans: list = []
    under_load(old_lab, inv, lambda: upgrade(inv, only="tomcat,java,memcached", quiet=True, plans=plans), mode="msm")
    after = pids(old_lab, units)
    assert all(after[k] != before[k] for k in before), (before, after)
    for t in old_lab.tomcats:
        v = versions(old_lab, t)
        assert (v["tomcat10"], v["openjdk-17-jre-headless"], v["memcached"]) == (NEW, JRE_NEW, MC_NEW), v
    restarts = [s for s in plans[0].steps if isinstance(s, (RestartTomcat, UpgradeService))]
    assert [s.host for s in restarts] == old_lab.tomcats  # memcached inside its Tomcat's restart, one at a time
    assert [s.wave for s in restarts] == list(range(1, len(old_lab.tomcats) + 1))
    healthy(inv, "msm")

    before = pids(old_lab, units)
    under_load(old_lab, inv, lambda: rollback(inv, quiet=True), mode="msm")
    after = pids(old_lab, units)
    assert all(after[k] != before[k] for k in before), (before, after)
    for t in old_lab.tomcats:
        v = versions(old_lab, t)
        assert (v["tomcat10"], v["openjdk-17-jre-headless"], v["memcached"]) == (OLD, JRE_OLD, MC_OLD), v
    healthy(inv, "msm")


def test_nginx_last_its_package_restarts_it(old_lab):
    inv = old_lab.inv
    n = inv.nginx.name
    before = old_lab.pid(n, "nginx")
    mode = status.cluster_report(inv, session_requests=0).mode or "delta"
    with Load(inv.nginx.address, sessions=5, rate=20, mode=mode) as load:
        wait_answered(load)
        assert upgrade(inv, only="nginx", quiet=True)
        wait_answered(load)
    print(f"\nnginx upgraded under load (its package restarts it): {load.result.line()}")
    assert old_lab.pid(n, "nginx") != before
    assert versions(old_lab, n)["nginx"] == "1.22.1-9+deb12u12"
    rollback(inv, quiet=True)
    assert versions(old_lab, n)["nginx"] == "1.22.1-9+deb12u9"

"""Planning is pure: facts captured from real lab hosts in, a Plan out."""

from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

import pytest

from types import SimpleNamespace

from tcsession import nginx, state
from tcsession import plan as planning
from tcsession.errors import TcsessionError
from tcsession.modes import DELTA, MSM, missing_ports
from tcsession.steps import FileChange, RestartMemcached, WriteFiles, manifest_for
from tcsession.facts import FileFact, parse_facts
from tcsession.inventory import load_inventory, parse_inventory
from tcsession.probes import parse_ss

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "facts"


@pytest.fixture
def inv():
    return load_inventory(ROOT / "hosts.toml")


@pytest.fixture
def deployed():
    return {n: parse_facts((DATA / f"deployed-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}


def host(p, name: str) -> SimpleNamespace:
    """One host's share of a plan: its file changes, whether its Tomcat (or nginx) restarts,
    whether memcached does."""
    steps = [s for s in p.for_host(name) if not type(s).__name__.startswith("Check")]
    return SimpleNamespace(files=p.files(name), empty=not steps, restart=p.restarts(name) or any(
        type(s).__name__ == "ApplyNginx" for s in steps), memcached=any(isinstance(s, RestartMemcached) for s in steps),
        service=next((s.unit for s in steps if hasattr(s, "unit")), ""))


def with_settings(inv, extra: str):
    text = (ROOT / "hosts.toml").read_text()
    head, _, _ = text.partition("[delta]")
    return parse_inventory(head + extra, inv.path)


def test_a_deployed_cluster_plans_nothing(inv, deployed):
    p = planning.plan(inv, deployed, "delta")
    assert p.empty, p.lines()


def test_a_setting_change_patches_server_xml_only_and_restarts_tomcats(inv, deployed):
    changed = with_settings(inv, "[delta]\nchannel_send_options = 2\n")
    p = planning.plan(changed, deployed, "delta")
    assert host(p, "nginx").empty
    for t in ("tomcat1", "tomcat2"):
        hp = host(p, t)
        assert [c.path for c in hp.files] == ["/etc/tomcat10/server.xml"]
        assert hp.restart and hp.service == "tomcat10"
        diff = hp.files[0].diff()
        assert [l for l in diff.splitlines() if l[:1] in "+-" and l[:3] not in ("+++", "---")] == [
            '-      <Cluster className="org.apache.catalina.ha.tcp.SimpleTcpCluster" channelSendOptions="6">',
            '+      <Cluster className="org.apache.catalina.ha.tcp.SimpleTcpCluster" channelSendOptions="2">']
        assert hp.files[0].mode == "640" and hp.files[0].owner == "root:tomcat"  # kept


def test_a_tomcat_that_was_not_restarted_after_its_files_changed_is_restarted(inv, deployed):
    """A deploy that stopped after writing files: the next one converges by restarting."""
    f = deployed["tomcat2"]
    stamp = state.applied_path("tomcat10")
    stale = dataclasses.replace(f, files={**f.files, stamp: FileFact(stamp, b"0" * 64 + b"\n", "644", "root:root")})
    p = planning.plan(inv, {**deployed, "tomcat2": stale}, "delta")
    assert host(p, "tomcat2").restart and not host(p, "tomcat2").files
    assert host(p, "tomcat1").empty


def test_a_stopped_tomcat_is_started(inv, deployed):
    f = deployed["tomcat1"]
    stopped = dataclasses.replace(f, active={**f.active, "tomcat10": "inactive"})
    assert host(planning.plan(inv, {**deployed, "tomcat1": stopped}, "delta"), "tomcat1").restart


def test_fresh_hosts_need_packages():
    fresh = parse_facts((DATA / "bookworm-fresh-tomcat1.txt").read_text())
    inv = load_inventory(ROOT / "hosts.toml")
    assert planning.packages_to_install(inv.host("tomcat1"), fresh) == ("tomcat10",)
    assert planning.packages_to_install(inv.nginx, fresh) == ("nginx",)
    nothing = dataclasses.replace(fresh, available=())
    with pytest.raises(TcsessionError, match="tomcat1: no Tomcat package available"):
        planning.packages_to_install(inv.host("tomcat1"), nothing)


def test_a_malformed_server_xml_on_a_host_is_one_line_naming_host_and_file(inv, deployed):
    f = deployed["tomcat1"]
    path = "/etc/tomcat10/server.xml"
    broken = dataclasses.replace(f, files={**f.files, path: FileFact(path, b"<Server><Service>", "640", "root:tomcat")})
    with pytest.raises(TcsessionError) as err:
        planning.plan(inv, {**deployed, "tomcat1": broken}, "delta")
    assert str(err.value).startswith("tomcat1:/etc/tomcat10/server.xml") and "\n" not in str(err.value)


def test_nginx_plan_removes_the_default_site_link():
    inv = load_inventory(ROOT / "hosts.toml")
    f = parse_facts((DATA / "deployed-nginx.txt").read_text())
    link = FileFact(nginx.DEFAULT_SITE, None, link="/etc/nginx/sites-available/default")
    p = planning.nginx_changes(inv, inv.nginx, dataclasses.replace(f, files={**f.files, nginx.DEFAULT_SITE: link}), DELTA)
    (change,) = p.files
    assert change.after is None and change.before_link == "/etc/nginx/sites-available/default"
    assert p.restart


def test_apply_script_saves_prior_bytes_and_writes_atomically(tmp_path, inv, deployed):
    """Run the generated script for real on this machine, in a scratch directory."""
    target = tmp_path / "etc" / "server.xml"
    target.parent.mkdir()
    target.write_bytes(b"old\n")
    change = FileChange(str(target), b"old\n", b"new\n", "640", "root:root", "644", "root:root")
    created = FileChange(str(tmp_path / "new" / "dir" / "f"), None, b"x", "644", "root:root")
    changes = (change, created)
    script = WriteFiles("h", "test", "testid", manifest_for("testid", "delta", "t", changes), changes).script()
    scratch = tmp_path / "state"
    script = script.replace(state.STATE_DIR, str(scratch))
    state_dir = scratch
    subprocess.run(["sh", "-c", script], check=True)
    assert target.read_bytes() == b"new\n" and oct(target.stat().st_mode)[-3:] == "640"
    assert (state_dir / "deploys/testid/files/0").read_bytes() == b"old\n"
    assert (tmp_path / "new/dir/f").read_bytes() == b"x"
    assert (state_dir / "deploys/testid/created-dirs").read_text().split() == [str(tmp_path / "new/dir")]
    import json

    manifest = json.loads((state_dir / "deploys/testid/manifest.json").read_text())
    assert [f["existed"] for f in manifest["files"]] == [True, False]
    assert oct((state_dir / "deploys").stat().st_mode)[-3:] == "700"
    assert state.Manifest.from_json((state_dir / "deploys/testid/manifest.json").read_text()) == manifest_for(
        "testid", "delta", "t", changes)


def test_expected_and_missing_ports(inv):
    listeners = {
        "nginx": parse_ss("LISTEN 0 511 0.0.0.0:80 0.0.0.0:*"),
        "tomcat1": parse_ss("LISTEN 0 100 *:8080 *:*\nLISTEN 0 50 [::ffff:10.153.0.112]:4000 *:*")
        + parse_ss("UNCONN 0 0 228.0.0.4:45564 0.0.0.0:*", "udp"),
        "tomcat2": parse_ss("LISTEN 0 100 *:8080 *:*\nLISTEN 0 50 127.0.0.1:4000 0.0.0.0:*"),
    }
    assert len(DELTA.expected_ports(inv)) == 7
    missing = {(m.host, m.proto, m.port) for m in missing_ports(inv, DELTA, listeners)}
    # tomcat2's receiver listens on loopback only, and it has no multicast socket.
    assert missing == {("tomcat2", "tcp", 4000), ("tomcat2", "udp", 45564)}


# --------------------------------------------------------------------------- msm mode


@pytest.fixture
def msm_deployed():
    """The lab after `inv deploy --mode=msm` (sticky) with the stand-in jars (see data/facts/README.md)."""
    return {n: parse_facts((DATA / f"msm-sticky-{n}.txt").read_text()) for n in ("nginx", "tomcat1", "tomcat2")}


def jars_on(facts, lib="/var/lib/tomcat10/lib"):
    """The jars a host has, as the deploy would hand them to planning (the same bytes)."""
    from tcsession.msmjars import Jar

    return tuple(Jar(p.rsplit("/", 1)[1], f.content, "stand-in") for p, f in sorted(facts.files.items())
                 if p.startswith(lib + "/") and p.endswith(".jar"))


def test_an_msm_cluster_plans_nothing(inv, msm_deployed):
    inv = with_settings(inv, '[msm]\nbackup = "async"\n')  # the captured cluster predates backup = "sync"
    jars = {t: jars_on(msm_deployed[t]) for t in ("tomcat1", "tomcat2")}
    assert [j.name for j in jars["tomcat1"]] == ["memcached-session-manager-2.3.2-jakarta.jar",
                                                 "memcached-session-manager-tc9-2.3.2-jakarta.jar", "spymemcached-2.12.3.jar"]
    p = planning.plan(inv, msm_deployed, "msm", jars)
    assert p.empty, p.lines()


def test_msm_to_delta_removes_the_manager_the_jars_and_the_route_marker(inv, msm_deployed):
    p = planning.plan(inv, msm_deployed, "delta")
    hp = host(p, "tomcat1")
    by_path = {c.path: c for c in hp.files}
    for name in ("memcached-session-manager-2.3.2-jakarta.jar", "memcached-session-manager-tc9-2.3.2-jakarta.jar",
                 "spymemcached-2.12.3.jar"):
        c = by_path[f"/var/lib/tomcat10/lib/{name}"]
        assert c.after is None and c.before is not None  # saved for rollback
        assert c.diff().startswith(f"binary /var/lib/tomcat10/lib/{name}: sha256 ")
    assert by_path[state.JARS_LIST].after is None
    ctx = by_path["/var/lib/tomcat10/webapps/ROOT/META-INF/context.xml"]
    assert b"MemcachedBackupSessionManager" in ctx.before and b"MemcachedBackupSessionManager" not in ctx.after
    server = by_path["/etc/tomcat10/server.xml"].after
    assert b"tcsession: managed cluster" in server and b"managed jvmRoute" not in server
    assert b'jvmRoute="tomcat1"' in server
    assert "/etc/memcached.conf" not in by_path  # memcached stays as it is
    assert hp.restart and not hp.memcached and host(p, "nginx").empty


def test_msm_jar_changes_and_stale_jars(inv, msm_deployed):
    f = msm_deployed["tomcat1"]
    lib = "/var/lib/tomcat10/lib"
    old = f"{lib}/memcached-session-manager-2.2.0.jar"
    hand = f"{lib}/msm-kryo-serializer-2.3.2.jar"
    other = f"{lib}/postgresql-42.7.1.jar"
    facts = dataclasses.replace(f, files={**f.files, old: FileFact(old, b"old", "644", "root:root"),
                                          hand: FileFact(hand, b"kryo", "644", "root:root"),
                                          other: FileFact(other, b"pg", "644", "root:root")})
    jars = jars_on(f)
    newer = (dataclasses.replace(jars[0], data=jars[0].data + b"\0"),) + jars[1:]
    hp = planning.tomcat_changes(inv, inv.host("tomcat1"), facts, MSM, newer)
    changes = {c.path: c for c in hp.files}
    assert set(changes) == {old, hand, f"{lib}/{jars[0].name}", state.JARS_LIST}
    assert changes[old].after is None and changes[hand].after is None
    assert changes[f"{lib}/{jars[0].name}"].after.endswith(b"\0")
    assert hp.restart
    # leaving msm removes only what tcsession placed (the jar list), never the operator's jars
    delta = planning.tomcat_changes(inv, inv.host("tomcat1"), facts, DELTA)
    removed = {c.path for c in delta.files if c.after is None}
    assert old not in removed and hand not in removed and other not in removed
    assert f"{lib}/{jars[0].name}" in removed


def test_non_sticky_msm_drops_jvmroute_and_routes_round_robin(inv, msm_deployed):
    ns = with_settings(inv, "[msm]\nsticky = false\n")
    jars = {t: jars_on(msm_deployed[t]) for t in ("tomcat1", "tomcat2")}
    p = planning.plan(ns, msm_deployed, "msm", jars)
    hp = host(p, "tomcat2")
    changes = {c.path: c for c in hp.files}
    assert set(changes) == {"/etc/tomcat10/server.xml", "/var/lib/tomcat10/webapps/ROOT/META-INF/context.xml"}
    server = changes["/etc/tomcat10/server.xml"]
    assert b'jvmRoute' not in server.after.split(b"<Engine")[-1].split(b">")[0]
    ctx = changes["/var/lib/tomcat10/webapps/ROOT/META-INF/context.xml"].after
    assert b'sticky="false"' in ctx and b'lockingMode="all"' in ctx and b"failoverNodes" not in ctx
    site = host(p, "nginx").files[0].after.decode()
    assert "map $cookie_jsessionid" not in site and host(p, "nginx").restart


def test_msm_memcached_listen_change_restarts_memcached_only(inv, msm_deployed):
    other = with_settings(inv, "[msm]\nmemcached_port = 11311\n")
    jars = {t: jars_on(msm_deployed[t]) for t in ("tomcat1", "tomcat2")}
    hp = host(planning.plan(other, msm_deployed, "msm", jars), "tomcat1")
    paths = [c.path for c in hp.files]
    assert "/etc/memcached.conf" in paths and hp.memcached
    assert b"-p 11311" in next(c for c in hp.files if c.path == "/etc/memcached.conf").after
    assert hp.restart  # the Manager's memcachedNodes name the new port


def test_msm_fresh_hosts_need_memcached_too():
    fresh = parse_facts((DATA / "bookworm-fresh-tomcat1.txt").read_text())
    inv = load_inventory(ROOT / "hosts.toml")
    assert planning.packages_to_install(inv.host("tomcat1"), fresh, "msm") == ("tomcat10", "memcached")
    assert planning.predicted_major(inv.host("tomcat1"), fresh, ("tomcat10", "memcached")) == 10
    assert planning.predicted_major(inv.host("tomcat1"), fresh, ("tomcat",)) is None  # RHEL: known once installed


def test_msm_global_scope_moves_the_manager_to_conf_context_xml(inv, msm_deployed):
    glob = with_settings(inv, '[msm]\nscope = "global"\n')
    jars = {t: jars_on(msm_deployed[t]) for t in ("tomcat1", "tomcat2")}
    hp = host(planning.plan(glob, msm_deployed, "msm", jars), "tomcat1")
    changes = {c.path: c for c in hp.files}
    assert set(changes) == {"/etc/tomcat10/context.xml", "/var/lib/tomcat10/webapps/ROOT/META-INF/context.xml"}
    assert b"MemcachedBackupSessionManager" in changes["/etc/tomcat10/context.xml"].after
    assert b"MemcachedBackupSessionManager" not in changes["/var/lib/tomcat10/webapps/ROOT/META-INF/context.xml"].after
    assert changes["/etc/tomcat10/context.xml"].mode == msm_deployed["tomcat1"].files["/etc/tomcat10/context.xml"].mode
    assert hp.restart


def test_msm_memcached_on_localhost_too_when_asked(inv, msm_deployed):
    local = with_settings(inv, '[msm]\nmemcached_localhost = true\nbackup = "async"\n')  # as captured
    jars = {t: jars_on(msm_deployed[t]) for t in ("tomcat1", "tomcat2")}
    hp = host(planning.plan(local, msm_deployed, "msm", jars), "tomcat2")
    (conf,) = [c for c in hp.files if c.path == "/etc/memcached.conf"]
    assert b"\n-l 10.153.0.113,127.0.0.1\n" in conf.after and hp.memcached and not hp.restart

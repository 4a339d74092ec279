"""deploy --mode=msm on real hosts (bookworm, Tomcat 10.1: the jakarta conversion), with a TEST
STAND-IN for memcached-session-manager's jars (tests/standin.py) served over HTTP in Maven layout.

The stand-in proves resolution over HTTP, checksums and the lock file, placement (names, owner,
mode), the javax -> jakarta conversion (the stand-in links only once converted), Tomcat starting
with the Manager in the Context, memcached on each host's own address and reachable from every
Tomcat's JVM, stale jars removed and restored, rollback and the switch to delta mode and back.
It keeps sessions in each JVM only: nothing here claims that MSM works. Every claim about MSM
itself (its start, status healthy, sessions surviving a Tomcat or a memcached, non-sticky
locking, rolling changes under load) is made with the real jars in test_msm_real.py, which
runs on every `./dev.sh test` (../shared/fixtures/msm/repo) and fails under CI=true without them.
What only a stand-in can show: a tampered checksum, a missing artifact, a lock mismatch.
"""

from __future__ import annotations

import hashlib
import os
import re
import subprocess
import sys

import pytest

import standin
from conftest import ROOT, host_state, new_lab, rollback_everything
from tcsession import status
from tcsession.deploy import deploy
from tcsession.errors import TcsessionError
from tcsession.inventory import load_inventory
from tcsession.msmjars import servlet_namespaces
from tcsession.rollback import history, rollback

pytestmark = pytest.mark.lab

LIB = "/var/lib/tomcat10/lib"
APP_CONTEXT = "/var/lib/tomcat10/webapps/ROOT/META-INF/context.xml"
WATCHED = ("/etc/tomcat10/server.xml", "/etc/tomcat10/context.xml", APP_CONTEXT, "/etc/memcached.conf",
           "/var/lib/tomcat10/bin/setenv.sh")
JARS = ("memcached-session-manager-2.3.2-jakarta.jar", "memcached-session-manager-tc9-2.3.2-jakarta.jar",
        "spymemcached-2.12.3.jar")


def inventory_text(handle_path, repo: str, **msm_settings) -> str:
    settings = {"maven_repo": repo, **msm_settings}
    body = "".join(f"{k} = {'true' if v is True else 'false' if v is False else repr(v).replace(chr(39), chr(34))}\n"
                   for k, v in settings.items())
    return handle_path.read_text() + "\n[msm]\n" + body


def addr(lab, name: str) -> str:
    """A Tomcat's address in this lab (its own subnet: TCSESSION_TEST_SUBNETS may move it)."""
    return next(t.address for t in lab.inv.tomcats if t.name == name)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("msm")
    old_cache = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")  # never the user's cache
    repo = standin.write_repo(tmp / "repo", standin.standin_jars())
    try:
        with standin.serve(repo) as url:
            def prepare(handle):  # the lab's inventory plus [msm] with the stand-in's URL
                inv_path = tmp / "hosts.toml"
                inv_path.write_text(inventory_text(handle.inv_path, url))
                handle.base_path = handle.inv_path
                handle.inv_path, handle.inv = inv_path, load_inventory(inv_path)
                handle.url, handle.repo, handle.tmp = url, repo, tmp

            yield from new_lab(tmp_path_factory, "tcsmsm", "10.153.12.0/24", deploy_mode="msm", prepare=prepare)
    finally:
        if old_cache is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old_cache


def variant(handle, name: str, **msm_settings):
    """The same lab with other [msm] settings, beside hosts.toml (its own <name>.msm.lock, the same jar cache)."""
    path = handle.tmp / name
    path.write_text(inventory_text(handle.base_path, handle.url, **msm_settings))
    return load_inventory(path)


def snapshot(handle) -> dict:
    """What "nothing changed" compares: checksums of the watched files (each must exist), the
    jars in Tomcat's lib (mode, owner, checksum), the PIDs, the packages; each command checked."""
    out = {t: host_state(handle, t, files=WATCHED, units=("tomcat10", "memcached"), dirs=())
           + "\n".join(f"{k} {v}" for k, v in sorted(lib_listing(handle, t).items())) for t in ("tomcat1", "tomcat2")}
    out["nginx"] = host_state(handle, "nginx", files=("/etc/nginx/conf.d/tcsession.conf",), units=("nginx",), dirs=())
    return out


def lib_listing(handle, host: str) -> dict[str, str]:
    r = handle.run(host, f"cd {LIB} && for f in *.jar; do [ -f \"$f\" ] && echo \"$(stat -c '%a %U:%G' \"$f\") "
                   "$(sha256sum < \"$f\" | cut -c1-64) $f\"; done; true")
    assert r.ok, r.why()
    return {line.split()[3]: " ".join(line.split()[:3]) for line in r.stdout.splitlines()}


def tomcat_log(handle, host: str) -> str:
    return handle.check(host, "since=$(systemctl show -p ActiveEnterTimestamp --value tomcat10) && "
                        "journalctl -u tomcat10 --since \"$since\" --no-pager -o cat")


def test_fresh_deploy_places_verified_converted_jars(lab):
    lock = (lab.tmp / "hosts.msm.lock").read_text()
    for coord in ("de.javakaffee.msm:memcached-session-manager:2.3.2",
                  "de.javakaffee.msm:memcached-session-manager-tc9:2.3.2", "net.spy:spymemcached:2.12.3"):
        assert f'["{coord}"]' in lock
    cached = lab.tmp / "cache" / "tcsession" / "maven" / "jakarta"
    converted = {p.name: p.read_bytes() for p in cached.glob("*/*.jar")}
    assert set(converted) == set(JARS[:2])
    assert servlet_namespaces(converted[JARS[0]], "converted core") == {"jakarta"}
    for host in ("tomcat1", "tomcat2"):
        listing = lib_listing(lab, host)
        assert sorted(listing) == sorted(JARS), listing
        for name, data in converted.items():
            assert listing[name] == f"644 root:root {hashlib.sha256(data).hexdigest()}"


def test_tomcat_started_the_manager_and_reaches_every_memcached(lab):
    for host, own in (("tomcat1", "n1"), ("tomcat2", "n2")):
        log = tomcat_log(lab, host)
        line = next((l for l in log.splitlines() if "tcsession-standin" in l), None)
        assert line, log[-2000:]
        # Converted jar linked on Tomcat 10.1; its Manager got tcsession's attributes; this JVM
        # talked to both memcached nodes, its own and the peer's.
        assert "Apache Tomcat/10.1" in line and "sticky=true" in line and f"failoverNodes=[{own}]" in line
        for node, name in (("n1", "tomcat1"), ("n2", "tomcat2")):
            assert re.search(rf"{node}@{re.escape(addr(lab, name))}:11211=VERSION_1\.", line), line
        assert "SEVERE" not in log
        ctx = lab.check(host, f"cat {APP_CONTEXT}")
        assert 'className="de.javakaffee.web.msm.MemcachedBackupSessionManager"' in ctx
        assert f'memcachedNodes="n1:{addr(lab, "tomcat1")}:11211,n2:{addr(lab, "tomcat2")}:11211"' in ctx
        server = lab.check(host, "cat /etc/tomcat10/server.xml")
        assert f'jvmRoute="{host}"' in server and "tcsession: managed jvmRoute" in server
        assert "tcsession: managed cluster" not in server


def test_memcached_listens_only_on_its_own_address(lab):
    for host in ("tomcat1", "tomcat2"):
        out = lab.check(host, "ss -Hntl 'sport = :11211'")
        assert [l.split()[3] for l in out.splitlines()] == [f"{addr(lab, host)}:11211"], out


def test_msm_binds_every_port_to_the_node(lab):
    """No HTTP, memcached or cluster port on a wildcard address in msm mode (moved here from
    test_bind_lab.py, whose shared cluster runs delta: one mode switch fewer)."""
    from test_bind_lab import wildcard_cluster_ports

    for t in ("tomcat1", "tomcat2"):
        assert wildcard_cluster_ports(lab, t) == [], t


def test_second_deploy_changes_nothing(lab):
    before = snapshot(lab)
    report = deploy(lab.inv, "msm", quiet=True)
    assert not report.changed and report.plan.empty
    assert snapshot(lab) == before


def test_status_checks_memcached_manager_and_jars(lab):
    report = status.cluster_report(lab.inv, session_requests=10)
    assert report.mode == "msm"
    for h in report.hosts:
        checks = {what: ok for what, ok, _ in h.checks}
        if h.role == "tomcat":
            for what in ("memcached active", "msm Manager", "msm jars", "memcached reachable", f"tcp {addr(lab, h.name)}:11211"):
                assert checks[what], h.checks
            # The one thing a stand-in cannot show: memcached-session-manager's own start line.
            assert h.problems == ["msm initialized: no MSM initialization line (\"starts initialization... "
                                  "(configured nodes definition\") since Tomcat started (a test stand-in Manager "
                                  "is loaded, not memcached-session-manager)"]
        else:
            assert not h.problems
    # sticky routing keeps the session on one node (in that JVM's memory: no replication claimed);
    # its id names no memcached node: the stand-in keeps nothing in memcached, and status says so
    assert report.session.ok and report.session.last_count == 10 and len(report.session.nodes) == 1
    assert report.session_node is None and not report.healthy
    assert "names no memcached node (n1, n2)" in report.msm_problems[0]
    proc = subprocess.run([sys.executable, "-m", "invoke", "status", "-i", str(lab.inv_path), "--json"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60,
                          env={**os.environ})
    assert proc.returncode == 1  # unhealthy: the stand-in is not MSM


def test_status_sees_a_memcached_that_is_down(lab):
    assert lab.run("tomcat2", "systemctl stop memcached").ok
    try:
        report = status.cluster_report(lab.inv, session_requests=0)
        t1 = next(h for h in report.hosts if h.name == "tomcat1")
        reach = next(d for w, ok, d in t1.checks if w == "memcached reachable")
        assert f"unreachable: {addr(lab, 'tomcat2')}:11211" in reach
    finally:
        assert lab.run("tomcat2", "systemctl start memcached").ok


def test_changed_or_missing_jars_stop_the_deploy_before_any_host_changes(lab, tmp_path):
    before = snapshot(lab)
    fresh_cache = {"XDG_CACHE_HOME": str(tmp_path / "other-machine-cache")}
    old = os.environ["XDG_CACHE_HOME"]
    tampered = standin.write_repo(tmp_path / "tampered", standin.standin_jars())
    core = tampered / "de/javakaffee/msm/memcached-session-manager/2.3.2/memcached-session-manager-2.3.2.jar"
    try:
        os.environ.update(fresh_cache)
        with standin.serve(tampered) as url:
            inv = load_inventory_with_repo(lab, url)
            original = core.read_bytes()
            # 1. a different jar with a matching .sha1: the lock file refuses it
            core.write_bytes(original + b"\0")
            core.with_name(core.name + ".sha1").write_text(hashlib.sha1(core.read_bytes()).hexdigest())
            with pytest.raises(TcsessionError, match=r"memcached-session-manager:2\.3\.2: .* differs from .*msm\.lock"):
                deploy(inv, "msm", quiet=True)
            # 2. a jar that does not match its own .sha1
            core.with_name(core.name + ".sha1").write_text("0" * 40)
            with pytest.raises(TcsessionError, match=r"has SHA-1 [0-9a-f]{40} but memcached-session-manager-2\.3\.2\.jar\.sha1 says"):
                deploy(inv, "msm", quiet=True)
            # 3. a missing jar, named with where it was looked for
            core.write_bytes(original)
            core.with_name(core.name + ".sha1").write_text(hashlib.sha1(original).hexdigest())
            spy = tampered / "net/spy/spymemcached/2.12.3/spymemcached-2.12.3.jar"
            spy.unlink()
            with pytest.raises(TcsessionError, match=r"net\.spy:spymemcached:2\.12\.3: no jar at http://127\.0\.0\.1:\d+/net/spy"):
                deploy(inv, "msm", quiet=True)
    finally:
        os.environ["XDG_CACHE_HOME"] = old
    assert snapshot(lab) == before


def load_inventory_with_repo(lab, url):
    """The lab's inventory with another repository, and the lock committed beside it (the lab's
    own: the checksums pinned by the first deploy)."""
    path = lab.tmp / "hosts-other-repo.toml"
    path.write_text(inventory_text(lab.base_path, url))
    (lab.tmp / "hosts-other-repo.msm.lock").write_text((lab.tmp / "hosts.msm.lock").read_text())
    return load_inventory(path)


def test_non_sticky_dry_run_then_apply(lab):
    inv = variant(lab, "hosts-nonsticky.toml", sticky=False)
    before = snapshot(lab)
    proc = subprocess.run([sys.executable, "-m", "invoke", "deploy", "--mode=msm", "--dry-run", "-i", str(inv.path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=60, env={**os.environ})
    assert proc.returncode == 0, proc.stderr
    assert '-    <Engine name="Catalina" defaultHost="localhost" jvmRoute="tomcat1">' in proc.stdout
    assert "lockingMode=\"all\"" in proc.stdout and "restart tomcat10" in proc.stdout
    assert snapshot(lab) == before
    assert deploy(inv, "msm", quiet=True).changed
    for host in ("tomcat1", "tomcat2"):
        ctx = lab.check(host, f"cat {APP_CONTEXT}")
        assert 'sticky="false"' in ctx and 'lockingMode="all"' in ctx and "failoverNodes" not in ctx
        engine = lab.check(host, "grep '<Engine' /etc/tomcat10/server.xml").splitlines()[-1]  # [0]: a comment
        assert engine == '    <Engine name="Catalina" defaultHost="localhost">', engine
        assert "sticky=false failoverNodes=[] lockingMode=[all]" in tomcat_log(lab, host)
    site = lab.check("nginx", "cat /etc/nginx/conf.d/tcsession.conf")
    assert "map $cookie_jsessionid" not in site and "round robin" in site
    assert not deploy(inv, "msm", quiet=True).changed


PLANTED = {"memcached-session-manager-2.2.0.jar": "old msm", "msm-kryo-serializer-2.3.2.jar": "another serializer",
           "spymemcached-2.12.3-copy.jar": "left by hand"}


def test_stale_jars_are_removed_and_rollback_puts_them_back(lab):
    for name, text in PLANTED.items():
        assert lab.run("tomcat1", f"printf '{text}' > {LIB}/{name} && chmod 640 {LIB}/{name}").ok
    before = lib_listing(lab, "tomcat1")
    report = deploy(lab.inv, "msm", quiet=True)
    assert report.changed
    assert sorted(lib_listing(lab, "tomcat1")) == sorted(JARS)
    assert rollback(lab.inv, quiet=True) == [report.deploy_id]
    assert lib_listing(lab, "tomcat1") == before  # the same bytes, mode and owner
    assert deploy(lab.inv, "msm", quiet=True).changed
    assert sorted(lib_listing(lab, "tomcat1")) == sorted(JARS)


def test_switch_to_delta_and_back(lab):
    msm_state = snapshot(lab)
    report = deploy(lab.inv, "delta", quiet=True)
    assert report.changed
    for host in ("tomcat1", "tomcat2"):
        assert lib_listing(lab, host) == {}
        assert "MemcachedBackupSessionManager" not in lab.check(host, f"cat {APP_CONTEXT}")
        assert lab.check(host, "grep -c 'tcsession: managed cluster' /etc/tomcat10/server.xml").strip() == "1"
        assert lab.check(host, "test -e /var/lib/tcsession/msm-jars && echo there || echo absent").strip() == "absent"
    delta = status.cluster_report(lab.inv, session_requests=10)
    assert delta.mode == "delta" and delta.healthy, [(h.name, h.problems) for h in delta.hosts]
    # rolling back the switch returns the msm configuration, byte for byte
    assert rollback(lab.inv, quiet=True) == [report.deploy_id]
    after = snapshot(lab)
    for host in ("tomcat1", "tomcat2", "nginx"):
        strip_pids = lambda s: "\n".join(l for l in s.splitlines() if " pid " not in l)  # noqa: E731
        assert strip_pids(after[host]) == strip_pids(msm_state[host])
    assert status.cluster_report(lab.inv, session_requests=0).mode == "msm"


def test_rollback_of_everything_returns_the_hosts_as_installed(lab):
    """Back past the first deploy: the packages it installed stay, every file is the package's
    own again (Debian's stock files, kept in tests/data), the jars, the test page and setenv.sh
    are gone, nginx has Debian's default site again, services stopped; every deploy recorded as
    rolled back."""
    rollback_everything(lab.inv)
    hist = history(lab.inv)
    assert hist["tomcat1"] and all(r.rolled_back for recs in hist.values() for r in recs)
    data = ROOT / "tests" / "data"
    stock = {"/etc/tomcat10/server.xml": data / "debian-bookworm-tomcat10" / "server.xml",
             "/etc/tomcat10/context.xml": data / "debian-bookworm-tomcat10" / "context.xml",
             "/etc/memcached.conf": data / "debian-bookworm-memcached" / "memcached.conf"}
    # tomcat1 keeps only what an operator put there by hand (test_stale_jars_...), none of tcsession's
    assert sorted(lib_listing(lab, "tomcat1")) == sorted(PLANTED)
    assert lib_listing(lab, "tomcat2") == {}
    for host in ("tomcat1", "tomcat2"):
        for path, local in stock.items():
            now = lab.check(host, f"sha256sum < {path}").split()[0]
            assert now == hashlib.sha256(local.read_bytes()).hexdigest(), path
        assert lab.check(host, "test -e /var/lib/tomcat10/bin/setenv.sh && echo there || echo absent").strip() == "absent"
        assert 'MemcachedBackupSessionManager' not in lab.check(host, f"cat {APP_CONTEXT}")
        for unit in ("memcached", "tomcat10"):
            assert lab.check(host, f"systemctl is-active {unit} || true").strip() != "active", unit
        # (moved here from test_change_safely.py's rolling-everything-back test)
        out = lab.check(host, "for f in bin/setenv.sh webapps/ROOT/test.jsp webapps/ROOT/WEB-INF; do "
                              "if [ -e /var/lib/tomcat10/$f ]; then echo \"left: $f\"; fi; done; ls /var/lib/tomcat10/webapps/ROOT")
        assert "left:" not in out, out
    out = lab.check("nginx", "readlink /etc/nginx/sites-enabled/default; ls /etc/nginx/conf.d; systemctl is-active nginx || true")
    assert out.split() == ["/etc/nginx/sites-available/default", "inactive"], out  # Debian's site back, nginx stopped


def test_a_script_longer_than_one_argument_runs_over_stdin(lab):
    """Jars make deploy scripts larger than Linux takes in one argument (128 KiB): those go over
    standard input into a temporary file on the host."""
    from tcsession.remote import MAX_INLINE_COMMAND, Remote

    payload = os.urandom(150_000).hex()  # 300 KB of text
    count = "find /tmp -maxdepth 1 -name 'tcsession.????????' | wc -l"
    script = f"printf %s {payload} | sha256sum | cut -c1-64; {count}"
    assert len(script) > 2 * MAX_INLINE_COMMAND
    with Remote(lab.inv) as r:
        res = r.run(lab.inv.host("tomcat1"), script)
    assert res.ok, res.why()
    digest, leftovers = res.stdout.split()
    assert digest == hashlib.sha256(payload.encode()).hexdigest()
    assert leftovers == "1"  # only the running script's own file; it is removed afterwards
    assert lab.check("tomcat1", count).strip() == "0"

"""memcached-session-manager with the REAL jars: every positive msm claim is made here.

The jars come from TCSESSION_MAVEN_REPO, else ../shared/fixtures/msm/repo (MSM 2.3.2 core and
tc9, spymemcached 2.12.3, compiled from the upstream sources: see that directory's README).
`./dev.sh test` sets the variable when the fixture is there; under CI=true a run without the
jars fails instead of skipping (conftest.real_msm_repo).

On bullseye (Tomcat 9: the jars as they are) and bookworm (Tomcat 10.1: converted with
javax2jakarta): MSM starts and `inv status` is healthy; sticky sessions survive their Tomcat
stopped and killed (MSM renames the id, base and count go on) with no settle time (backup = "sync",
the default: the session is in memcached before the response); answer-then-SIGKILL rounds; a
stopped memcached that holds the session, then the serving Tomcat; non-sticky: 10 clients at once
on one session over both nodes with the defaults (lockingMode=all, backup sync, one request per
session at a time in each Tomcat) repeat and lose no count; a rolling deploy and its rollback under
load; a session whose id was rotated (changeSessionId) failing over once its next request backed
it up under the new id.

Behind `-m measure` (`./dev.sh test tests/test_msm_real.py -m measure -s`): 5 rounds of 200 at 10
clients, the same with 4 Tomcats, 20 SIGKILL rounds with sync and with async, what
lockingMode=none loses, and the latency per request of each locking mode and backup setting.

Each test prints `[release] what: requests=N failed=F lost=L` (run pytest with -s to see them).
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import ROOT, LabHandle, real_msm_repo, write_lab_inventory
from tcsession import status
from tcsession.client import SessionClient, parse_session_id
from tcsession.deploy import deploy
from tcsession.inventory import load_inventory
from tcsession.load import Load
from tcsession.nginx import FAIL_TIMEOUT
from tcsession.rollback import rollback
from tcsession.webapp import parse_test_line

pytestmark = pytest.mark.lab

RELEASES = {"bullseye": ("tomcat9", "10.153.13.0/24"), "bookworm": ("tomcat10", "10.153.14.0/24")}
VARIANTS = {
    "sticky": "sticky = true\n",  # backup = "sync", the default
    "sticky-async": 'sticky = true\nbackup = "async"\n',
    "sticky-changed": 'sticky = true\nrequest_uri_ignore_pattern = ".*\\\\.(ico|png|gif|jpg|css|js|svg)$"\n',
    "nonsticky": "sticky = false\n",  # the defaults: locking_mode = "all", backup = "sync"
    "nonsticky-auto": 'sticky = false\nlocking_mode = "auto"\n',
    "nonsticky-none": 'sticky = false\nlocking_mode = "none"\n',
    "nonsticky-async": 'sticky = false\nbackup = "async"\n',
}


@pytest.fixture(scope="module", params=list(RELEASES))
def real(request, tmp_path_factory):
    repo = real_msm_repo()
    release = request.param
    unit, subnet = RELEASES[release]
    tmp = tmp_path_factory.mktemp(f"real-{release}")
    (tmp / "base").mkdir()
    base = write_lab_inventory(tmp / "base", release=release, name=f"tcsr{release[:4]}", subnet=subnet)
    for name, settings in VARIANTS.items():  # side by side: one jar cache, a <name>.msm.lock each
        (tmp / f"{name}.toml").write_text(base.read_text() + f'\n[msm]\nmaven_repo = "{repo}"\n' + settings)
    handle = LabHandle(tmp / "sticky.toml").up()
    handle.unit, handle.tmp, handle.release = unit, tmp, release
    try:
        if release == "bullseye":  # first Tomcat's own cluster on Tomcat 9 from fresh hosts, then the switch
            tomcat9_delta_then_the_switch_to_msm(handle)
        else:
            assert deploy(handle.inv, "msm", quiet=True).changed
        yield handle
    finally:
        handle.down()


def tomcat9_delta_then_the_switch_to_msm(handle) -> None:
    """Debian 11 (Tomcat 9, its own paths and unit, discovered, not assumed): the delta cluster
    from fresh hosts, healthy, a session that survives the loss of its node, a second deploy that
    changes nothing; then delta to msm with the real javax jars (unconverted), memcached
    installed, the Cluster gone. (This lab also made tests/test_bullseye.py's claims: one lab.)"""
    from test_delta import session_survives_a_node

    delta = load_inventory(handle.tmp / "base" / "hosts.toml")
    report = deploy(delta, "delta", quiet=True)
    assert report.installed["tomcat1"][0] == "tomcat9"
    assert {"/etc/tomcat9/server.xml", "/var/lib/tomcat9/bin/setenv.sh"} <= {c.path for c in report.plan.files("tomcat1")}
    st = status.cluster_report(delta)
    assert st.healthy, [(h.name, h.problems) for h in st.hosts]
    facts = next(h for h in st.hosts if h.name == "tomcat2").facts
    assert facts.os["VERSION_CODENAME"] == "bullseye" and facts.packages["tomcat9"].startswith("9.0.")
    assert not deploy(delta, "delta", quiet=True).changed
    session_survives_a_node(handle, delta, unit="tomcat9")
    report = deploy(handle.inv, "msm", quiet=True)
    assert report.changed and "memcached" in report.installed.get("tomcat1", ())
    lib = handle.check("tomcat1", "ls /var/lib/tomcat9/lib").split()
    assert lib == ["memcached-session-manager-2.3.2.jar", "memcached-session-manager-tc9-2.3.2.jar",
                   "spymemcached-2.12.3.jar"]
    assert "tcsession: managed cluster" not in handle.check("tomcat1", "cat /etc/tomcat9/server.xml")
    assert not deploy(handle.inv, "msm", quiet=True).changed


def inventory(real, variant: str):
    """The lab deployed with one [msm] variant (a no-op when it already is)."""
    inv = load_inventory(real.tmp / f"{variant}.toml")
    deploy(inv, "msm", quiet=True)
    return inv


def record(real, what: str, requests: int, failed: int, lost: int, extra: str = "") -> None:
    print(f"\n[{real.release}] {what}: requests={requests} failed={failed} lost={lost}{extra}")


def other_of(name: str) -> str:
    return "tomcat2" if name == "tomcat1" else "tomcat1"


def host_of_node(node: str) -> str:
    """memcached node n<position> runs beside the Tomcat at that position (tcsession's ids)."""
    return f"tomcat{int(node[1:])}"


def start_again(real, name: str) -> None:
    """Start a Tomcat a test stopped; then wait out nginx's fail_timeout, after which every
    upstream tries that node again (each upstream keeps its own failure state)."""
    real.start_serving(name, real.unit)
    time.sleep(int(FAIL_TIMEOUT.rstrip("s")) + 0.5)


def backed_up(inv, session_id: str, timeout: float = 5.0) -> bool:
    """Whether, within `timeout`, the memcached node the id names holds the session (MSM backs up
    asynchronously after the response, sessionBackupAsync). A `get` from this machine to the lab
    host's memcached; the key is the id with or without the jvmRoute (both asked)."""
    sid = parse_session_id(session_id, "msm")
    host = next(h for h in inv.tomcats if h.name == host_of_node(sid.node))
    keys = sorted({session_id, session_id.split(".", 1)[0]})
    deadline = time.monotonic() + timeout
    while True:
        with socket.create_connection((host.address, inv.msm.memcached_port), timeout=2) as s:
            s.sendall(b"".join(b"get %s\r\n" % k.encode() for k in keys))
            answer = b""
            while answer.count(b"END\r\n") < len(keys):
                chunk = s.recv(65536)
                if not chunk:
                    break
                answer += chunk
        if b"VALUE " in answer:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.1)


def pids(real) -> dict[str, str]:
    return {t: real.run(t, f"systemctl show -p MainPID --value {real.unit}").stdout.strip() for t in ("tomcat1", "tomcat2")}


def test_msm_starts_and_status_is_healthy(real):
    inv = inventory(real, "sticky")
    report = status.cluster_report(inv, session_requests=10)
    assert report.mode == "msm" and report.healthy, ([(h.name, h.problems) for h in report.hosts], report.msm_problems)
    for h in report.hosts:
        if h.role == "tomcat":
            init = {w: d for w, ok, d in h.checks}["msm initialized"]
            own = "n1" if h.name == "tomcat1" else "n2"
            assert init == f"finished initialization: node ids [{'n2' if own == 'n1' else 'n1'}], failover node ids [{own}]"
    # the check's session lives on the memcached node its id names, and that node holds items
    nodes = {n: items for n, _, items in report.memcached}
    assert set(nodes) == {"n1", "n2"} and report.session_node in nodes and nodes[report.session_node] > 0
    assert report.session_node == parse_session_id(report.session.session_ids[-1], "msm").node
    # sticky: the session lives in the memcached of the OTHER host (the own one is its failover node)
    served = next(iter(report.session.nodes))
    assert host_of_node(report.session_node) == other_of(served)
    record(real, "status session check", report.session.requests, report.session.failed, report.session.lost_updates)
    proc = subprocess.run([sys.executable, "-m", "invoke", "status", "-i", str(inv.path)], cwd=ROOT,
                          capture_output=True, text=True, timeout=120, env={**os.environ})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    assert "lives on memcached node n" in proc.stdout and "(holds sessions)" in proc.stdout
    for host in ("tomcat1", "tomcat2"):
        errors = real.run(host, f"journalctl -u {real.unit} -p err --no-pager -o cat --since "
                          f"\"$(systemctl show -p ActiveEnterTimestamp --value {real.unit})\"").stdout
        assert not errors.strip(), errors[-3000:]


def sticky_failover(real, how: str) -> None:
    """40 requests, then the serving Tomcat goes at once (no settle: with backup = "sync" MSM stores
    each request's session in memcached before its response), then 10 more on the other node."""
    inv = inventory(real, "sticky")
    client = SessionClient(inv.nginx.address, inv.nginx.http_port, mode="msm")
    for _ in range(40):
        client.request()
    run = client.run
    assert run.ok and run.last_count == 40 and len(run.nodes) == 1, run.to_dict()
    serving, before = run.last_node, parse_session_id(run.session_ids[-1], "msm")
    other = other_of(serving)
    assert real.run(serving, f"systemctl stop {real.unit}").ok
    try:
        for _ in range(10):
            client.request()
        record(real, f"sticky, serving Tomcat {how} right after its answer", run.requests, run.failed, run.lost_updates)
        assert run.ok and run.last_count == 50 and run.last_node == other, run.to_dict()
        after = parse_session_id(run.session_ids[-1], "msm")
        # MSM renamed it: the same base, the new owner's jvmRoute, another memcached node
        assert after.base == before.base and after.route == other and before.route == serving
        assert after.node != before.node and host_of_node(after.node) == serving, (before, after)
    finally:
        start_again(real, serving)


@pytest.mark.measure_for("bullseye")  # Tomcat 9: proven on bookworm in the default run
def test_sticky_session_survives_its_tomcat_stopped(real):
    sticky_failover(real, "stopped")


def get(address: str, port: int, cookie: str):
    """One test-page request with the session cookie: (parsed line or None, the cookie to send next)."""
    conn = http.client.HTTPConnection(address, port, timeout=10)
    try:
        conn.request("GET", "/test.jsp", headers={"Cookie": f"JSESSIONID={cookie}"})
        resp = conn.getresponse()
        line = parse_test_line(resp.read().decode("utf-8", "replace"))
        for name, value in resp.getheaders():
            if name.lower() == "set-cookie" and value.startswith("JSESSIONID="):
                cookie = value.split(";", 1)[0].split("=", 1)[1]
        return line, cookie
    finally:
        conn.close()


def kill_rounds(real, variant: str, rounds: int) -> tuple[int, list[str]]:
    """Rounds of "answer, then SIGKILL the serving Tomcat at once": on the serving host itself, a
    request to its own Tomcat and, the moment curl has the answer, kill -KILL of the JVM (a few
    milliseconds: no SSH round trip in between). Then the same session on the other Tomcat, asked
    directly (nginx's fail_timeout plays no part): its count must be the killed answer's + 1.
    The killed Tomcat is started again (and waited for) before the next round, which kills the
    other one. Returns (updates lost, one line per round)."""
    inv = inventory(real, variant)
    hosts = {t.name: t for t in inv.tomcats}
    client = SessionClient(inv.nginx.address, inv.nginx.http_port, mode="msm")
    client.request()
    assert client.run.ok, client.run.to_dict()
    cookie, serving = client.run.cookie, client.run.last_node
    lost, lines = 0, []
    for i in range(rounds):
        h, other = hosts[serving], hosts[other_of(serving)]
        r = real.run(serving, f"pid=$(systemctl show -p MainPID --value {real.unit}); [ \"$pid\" -gt 0 ] || exit 3; "
                              f"curl -sf -b 'JSESSIONID={cookie}' http://{h.address}:{h.http_port}/test.jsp; rc=$?; "
                              "kill -KILL $pid; for i in $(seq 1 40); do kill -0 $pid 2>/dev/null || exit $rc; sleep 0.1; done; exit 4")
        answered = parse_test_line(r.stdout)
        assert r.ok and answered is not None, r.why()
        line, cookie = get(other.address, other.http_port, answered.session)
        assert line is not None and line.node == other.name, (line, r.stdout[-300:])
        assert parse_session_id(line.session, "msm").base == parse_session_id(answered.session, "msm").base
        lost += answered.count + 1 - line.count
        lines.append(f"round {i + 1}: {serving} answered {answered.count} and was killed; {other.name} went on "
                     f"at {line.count}")
        real.start_serving(serving, real.unit)
        serving = other.name
    return lost, lines


def test_sticky_sync_loses_nothing_when_killed_right_after_answering(real):
    """backup = "sync" (the default): 5 rounds of answer-then-SIGKILL, 0 updates lost (20 rounds, and
    async for comparison, behind -m measure)."""
    lost, lines = kill_rounds(real, "sticky", 5)
    record(real, "sticky sync, answer then SIGKILL at once", len(lines), 0, lost, "\n  " + "\n  ".join(lines))
    assert lost == 0, lines


@pytest.mark.measure
def test_measure_sigkill_rounds_sync_and_async(real):
    """20 rounds each: sync asserted (0 lost), async reported (how many of 20 were lost)."""
    lost, lines = kill_rounds(real, "sticky", 20)
    record(real, "MEASURE sticky sync, 20 rounds answer-then-SIGKILL", 20, 0, lost)
    lost_async, lines_async = kill_rounds(real, "sticky-async", 20)
    record(real, "MEASURE sticky async, 20 rounds answer-then-SIGKILL (reported, not asserted)", 20, 0, lost_async,
           "\n  " + "\n  ".join(lines_async))
    assert lost == 0, lines


@pytest.mark.measure_for("bullseye")  # Tomcat 9: proven on bookworm in the default run
def test_sticky_session_survives_its_memcached_then_its_tomcat(real):
    """The memcached that holds the session (the node in its id: the OTHER host's) stopped: MSM
    moves the session to the failover node (the serving host's own memcached); then the serving
    Tomcat stopped: the other Tomcat finds the session on that node and goes on."""
    inv = inventory(real, "sticky")
    client = SessionClient(inv.nginx.address, inv.nginx.http_port, mode="msm")
    for _ in range(20):
        client.request()
    run = client.run
    assert run.ok and run.last_count == 20, run.to_dict()
    serving, first = run.last_node, parse_session_id(run.session_ids[-1], "msm")
    holder = host_of_node(first.node)
    assert holder == other_of(serving), first  # sticky: backed up away from its Tomcat
    assert real.run(holder, "systemctl stop memcached").ok
    try:
        # MSM notices the node is gone when a backup to it fails, then moves the session on a
        # later request: go on (bounded: 60 requests, 4 per second) until the id names another node
        started = time.monotonic()
        for _ in range(60):
            client.request()
            if parse_session_id(run.session_ids[-1], "msm").node != first.node:
                break
            time.sleep(0.25)
        moved = parse_session_id(run.session_ids[-1], "msm")
        record(real, "sticky, memcached holding the session stopped", run.requests, run.failed, run.lost_updates,
               f" (node {first.node} -> {moved.node} after {run.requests - 20} requests, "
               f"{time.monotonic() - started:.1f} s)")
        assert run.ok and run.last_count == run.requests and run.last_node == serving, run.to_dict()
        assert moved.base == first.base and host_of_node(moved.node) == serving, (first, moved)
        assert real.run(serving, f"systemctl stop {real.unit}").ok
        try:
            for _ in range(10):
                client.request()
            record(real, "sticky, then the serving Tomcat stopped", run.requests, run.failed, run.lost_updates)
            assert run.ok and run.last_count == run.requests and run.last_node == holder, run.to_dict()
            assert parse_session_id(run.session_ids[-1], "msm").base == first.base
        finally:
            start_again(real, serving)
    finally:
        assert real.run(holder, "systemctl start memcached").ok


def wait_for_both_nodes(inv) -> None:
    """nginx takes a node out for fail_timeout (5 s) after a failure: wait (bounded) until new
    sessions reach both Tomcats again."""
    seen, deadline = set(), time.monotonic() + 20
    while seen != {"tomcat1", "tomcat2"} and time.monotonic() < deadline:
        c = SessionClient(inv.nginx.address, inv.nginx.http_port, mode="msm")
        c.request()
        seen.add(c.run.last_node)
        time.sleep(0.2)
    assert seen == {"tomcat1", "tomcat2"}, seen


def concurrent_requests(inv, cookie: str, workers: int = 4, each: int = 25):
    counts, nodes, errors, lock = [], set(), [], threading.Lock()

    def worker() -> None:
        for _ in range(each):
            conn = http.client.HTTPConnection(inv.nginx.address, inv.nginx.http_port, timeout=10)
            try:
                conn.request("GET", "/test.jsp", headers={"Cookie": f"JSESSIONID={cookie}"})
                resp = conn.getresponse()
                line = parse_test_line(resp.read().decode("utf-8", "replace"))
            except OSError as e:
                line = None
                with lock:
                    errors.append(str(e))
            finally:
                conn.close()
            with lock:
                if line is None:
                    errors.append("not the test page")
                else:
                    counts.append(line.count)
                    nodes.add(line.node)
                    if parse_session_id(line.session, "msm").base != parse_session_id(cookie, "msm").base:
                        errors.append(f"another session: {line.session}")

    threads = [threading.Thread(target=worker) for _ in range(workers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert time.monotonic() - started < 120
    return counts, nodes, errors


def concurrent_round(inv, clients: int = 10, each: int = 20) -> dict:
    """One new session, then `clients` threads at once, `each` requests apiece, all with its cookie
    through nginx (round robin over the Tomcats), then one more request alone: the count the
    session reached. With the default settings every request is stored before its response and
    MSM's lock is released only after that store, so the lone request reads the final count at once.
    repeated: answers that showed a count another answer showed too (two requests read the same
    value); lost: updates missing from the final count; failed: requests not answered by the test
    page with this session."""
    client = SessionClient(inv.nginx.address, inv.nginx.http_port, mode="msm")
    client.request()
    assert client.run.ok and client.run.last_count == 1, client.run.to_dict()
    started = time.monotonic()
    counts, nodes, errors = concurrent_requests(inv, client.run.cookie, workers=clients, each=each)
    wall = time.monotonic() - started
    client.request()
    final = client.run.last_count
    return {"answers": len(counts), "failed": len(errors), "repeated": len(counts) - len(set(counts)),
            "lost": (1 + len(counts) + 1) - final, "nodes": sorted(nodes), "wall": wall, "errors": errors[:3],
            "repeated_counts": sorted({c for c in counts if counts.count(c) > 1})[:10]}


def journal_since(real, since: float) -> str:
    """Both Tomcats' unit logs since `since` (time.time()), stack frames left out: what a failed
    assertion shows, so that a CI run says why."""
    out = []
    for t in ("tomcat1", "tomcat2"):
        r = real.run(t, f"journalctl -u {real.unit} --since @{int(since) - 1} --no-pager -o short-precise "
                        "| grep -v -e '^\\s*at ' -e 'more$' | tail -n 40")
        out.append(f"--- {t}\n{r.stdout}")
    return "\n".join(out)


# MSM's own words when it could not take a session's lock within its operationTimeout (1000 ms by
# default; LockingStrategy in the 2.3.2 jar): it then serves the request without the lock.
MSM_LOCK_TIMEOUT = "Reached timeout when trying to aquire lock for session"


def assert_round_clean(real, what: str, r: dict, since: float) -> None:
    record(real, what, r["answers"] + r["failed"], r["failed"], r["lost"],
           f" (repeated {r['repeated']}, nodes {r['nodes']}, {r['wall']:.2f} s)")
    if r["failed"] or r["repeated"] or r["lost"]:
        log = journal_since(real, since)
        pytest.fail(f"{what}: {r} ; MSM lock timeouts logged: {log.count(MSM_LOCK_TIMEOUT)}\n{log}")


@pytest.mark.measure_for("bullseye")  # Tomcat 9: proven on bookworm in the default run
def test_non_sticky_concurrent_requests_lose_no_update(real):
    """The defaults (lockingMode=all, backup sync, PersistentValve's per-session semaphore in each
    Tomcat): 10 clients at once on one session, 200 requests over both nodes: every answer a
    distinct count, none lost, none failed (5 rounds, and 4 Tomcats, behind -m measure)."""
    inv = inventory(real, "nonsticky")
    wait_for_both_nodes(inv)
    since = time.time()
    r = concurrent_round(inv)
    assert r["nodes"] == ["tomcat1", "tomcat2"], r
    assert_round_clean(real, "non-sticky defaults, 10 clients x 20 on one session", r, since)


@pytest.mark.measure
def test_measure_non_sticky_five_rounds(real):
    inv = inventory(real, "nonsticky")
    wait_for_both_nodes(inv)
    for i in range(5):
        since = time.time()
        r = concurrent_round(inv)
        assert_round_clean(real, f"MEASURE non-sticky defaults, round {i + 1} of 5, 10 clients x 20", r, since)


@pytest.mark.measure
def test_measure_non_sticky_without_locking_races(real):
    """lockingMode=none (and the valve, sync backup): the same load, reported (how much it loses
    depends on timing): the MSM lock is what serialises the nodes."""
    inv = inventory(real, "nonsticky-none")
    wait_for_both_nodes(inv)
    r = concurrent_round(inv)
    record(real, "MEASURE non-sticky lockingMode=none, 10 clients x 20", r["answers"] + r["failed"], r["failed"],
           r["lost"], f" (repeated {r['repeated']}, nodes {r['nodes']})")


def sequential_latency(inv, n: int = 200) -> dict:
    """One client, one session, `n` requests one after the other through nginx (a new connection
    each, as SessionClient does): milliseconds per request."""
    client = SessionClient(inv.nginx.address, inv.nginx.http_port, mode="msm")
    client.request()
    times = []
    for _ in range(n):
        t0 = time.perf_counter()
        client.request()
        times.append((time.perf_counter() - t0) * 1000)
    assert client.run.ok and client.run.last_count == n + 1, client.run.to_dict()
    times.sort()
    return {"mean": sum(times) / n, "p50": times[n // 2], "p90": times[int(n * 0.9)]}


@pytest.mark.measure
def test_measure_latency_per_locking_mode_and_backup(real):
    """In one run, per variant: sequential requests (ms per request: mean, p50, p90) and, for
    non-sticky, one concurrent round (10 x 20: wall time, repeated, lost)."""
    rows = []
    for variant in ("nonsticky", "nonsticky-auto", "nonsticky-none", "nonsticky-async", "sticky", "sticky-async"):
        inv = inventory(real, variant)
        if not inv.msm.sticky:
            wait_for_both_nodes(inv)
        seq = sequential_latency(inv)
        extra = ""
        if not inv.msm.sticky:
            r = concurrent_round(inv)
            extra = (f"; 10x20 at once: {r['wall']:.2f} s, {r['wall'] / 200 * 1000:.1f} ms/request, "
                     f"repeated {r['repeated']}, lost {r['lost']}, failed {r['failed']}")
        rows.append(f"{variant:16} locking={inv.msm.locking_mode if not inv.msm.sticky else '-':5} "
                    f"backup={inv.msm.backup:5} sequential mean {seq['mean']:.1f} ms, p50 {seq['p50']:.1f}, "
                    f"p90 {seq['p90']:.1f}{extra}")
    print(f"\n[{real.release}] MEASURE latency per request\n  " + "\n  ".join(rows))


def test_rolling_deploy_and_rollback_under_load_lose_nothing(real):
    inventory(real, "sticky")
    changed = load_inventory(real.tmp / "sticky-changed.toml")
    before = pids(real)
    with Load(changed.nginx.address, changed.nginx.http_port, sessions=5, rate=20, mode="msm") as load:
        time.sleep(2)
        report = deploy(changed, "msm", quiet=True)
        time.sleep(2)
    assert report.changed and report.deploy_id
    r = load.result
    record(real, "rolling deploy under load", r.requests, r.failed, r.lost_updates)
    assert r.requests > 60 and (r.failed, r.lost_updates) == (0, 0), r.errors
    middle = pids(real)
    assert all(middle[t] != before[t] for t in before), (before, middle)
    with Load(changed.nginx.address, changed.nginx.http_port, sessions=5, rate=20, mode="msm") as load:
        time.sleep(2)
        assert rollback(changed, quiet=True) == [report.deploy_id]
        time.sleep(2)
    r = load.result
    record(real, "rollback under load", r.requests, r.failed, r.lost_updates)
    assert r.requests > 60 and (r.failed, r.lost_updates) == (0, 0), r.errors
    after = pids(real)
    assert all(after[t] != middle[t] for t in before), (middle, after)
    assert not deploy(real.inv, "msm", quiet=True).changed  # back at the sticky configuration


@pytest.mark.measure_for("bullseye")  # Tomcat 9: proven on bookworm in the default run
def test_a_rotated_session_id_still_fails_over(real):
    """changeSessionId (what Tomcat does at login): Tomcat 9.0.43+ and 10.1 rotate through
    Manager.rotateSessionId, which MSM 2.3.2's tc9 manager does not override. Measured here: the
    rotating request's own backup under the new id happens in some runs and not in others (two
    CI runs stopped the Tomcat 5 s after it with the new id in no memcached: the session was lost
    whole). What holds: the next request with the new id backs it up under that id, and from
    then on the session fails over. Both are reported."""
    inv = inventory(real, "sticky")
    client = SessionClient(inv.nginx.address, inv.nginx.http_port, mode="msm")
    for _ in range(5):
        client.request()
    client.request(rotate=True)
    run = client.run
    assert run.ok and run.last_count == 6, run.to_dict()
    old, new = (parse_session_id(i, "msm") for i in run.session_ids[-2:])
    assert old.base != new.base and new.node == old.node, (old, new)  # a new id, same memcached node
    at_once = backed_up(inv, run.session_ids[-1], timeout=3.0)
    client.request()  # the first request carrying the new id
    assert run.ok and run.last_count == 7 and run.session_ids[-1] == run.session_ids[-2], run.to_dict()
    assert backed_up(inv, run.session_ids[-1], timeout=5.0), f"{run.session_ids[-1]} not in memcached after its next request"
    serving = run.last_node
    assert real.run(serving, f"systemctl stop {real.unit}").ok
    try:
        for _ in range(5):
            client.request()
        record(real, "rotated id, then its Tomcat stopped", run.requests, run.failed, run.lost_updates,
               f" (the rotating request's own backup {'seen' if at_once else 'NOT seen within 3 s'})")
        assert run.ok and run.last_count == 12 and run.last_node == other_of(serving), run.to_dict()
        assert parse_session_id(run.session_ids[-1], "msm").base == new.base
    finally:
        start_again(real, serving)


# Four Tomcats (measure only): its own lab, so that it can run beside the module's two-Tomcat one.
FOUR = {"bullseye": ("tomcat9", "h18m4l", "10.153.52.0/24"), "bookworm": ("tomcat10", "h18m4k", "10.153.53.0/24")}


@pytest.fixture(scope="module", params=list(FOUR))
def four(request, tmp_path_factory):
    repo = real_msm_repo()
    release = request.param
    unit, name, subnet = FOUR[release]
    tmp = tmp_path_factory.mktemp(f"four-{release}")
    base = write_lab_inventory(tmp, tomcats=4, release=release, name=name, subnet=subnet)
    base.write_text(base.read_text() + f'\n[msm]\nmaven_repo = "{repo}"\nsticky = false\n')
    handle = LabHandle(base).up()
    handle.unit, handle.tmp, handle.release = unit, tmp, release
    try:
        assert deploy(handle.inv, "msm", quiet=True).changed
        yield handle
    finally:
        handle.down()


@pytest.mark.measure
def test_measure_non_sticky_four_tomcats(four):
    inv = four.inv
    seen, deadline = set(), time.monotonic() + 30
    while len(seen) < 4 and time.monotonic() < deadline:
        c = SessionClient(inv.nginx.address, inv.nginx.http_port, mode="msm")
        c.request()
        seen.add(c.run.last_node)
    assert len(seen) == 4, seen
    for i in range(5):
        r = concurrent_round(inv)
        record(four, f"MEASURE non-sticky defaults, 4 Tomcats, round {i + 1} of 5, 10 clients x 20",
               r["answers"] + r["failed"], r["failed"], r["lost"],
               f" (repeated {r['repeated']}, nodes {r['nodes']}, {r['wall']:.2f} s)")
        assert (r["failed"], r["repeated"], r["lost"]) == (0, 0, 0) and len(r["nodes"]) == 4, r

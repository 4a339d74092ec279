"""The operator's own application ([app.NAME]) on real hosts, in delta and in msm mode (msm with the
REAL memcached-session-manager jars of ../shared/fixtures/msm/repo), Tomcat 10.1 on bookworm.

A sample application built here (tests/sampleapp.py: a JSP page showing its version and a counter
kept in the session): version 1 deployed and serving on every node; a rollout to version 2 under
a bounded load through nginx (5 sessions, 20 requests/s): 0 failed, 0 lost updates, every node
serves version 2; `inv rollback` under the same load back to version 1, likewise, with the WAR's
sha256 equal to version 1's on every node. Refused with nothing changed on any host (checksums and
PIDs compared): a WAR without <distributable/> in delta mode, a javax WAR onto Tomcat 10.1 with
jakarta = "refuse".

The session-compatibility gate (tcsession.serialcompat): version 1 keeps sample.Cart (declared
serialVersionUID 1) in the session and version 2 adds a field under the same value, so the rollout
above is also the compatible case under load. A version whose declared value changed is refused
before any host changes (checksums and PIDs compared), naming the class. Delta, the mode's last
test (msm's drop is a measurement): a version that keeps a class the old one lacks (sample.Extra)
stops the rollout at tomcat1 because the old-version peer tomcat2 logged that it could not
deserialize it; from there, with sessions = "drop", a version whose Cart declares none (its
computed value differs) rolls, each node having said how many sessions it held (equal to what its
Manager says in the JVM: sessions.jsp; in msm also what its memcached node holds, counted beside
it), and those sessions are gone; a later one whose undeclared Cart gains a field is refused.

Both modes on ONE lab: the delta tests run first (deployed from fresh hosts), then the same hosts
switch to msm with version 1 (saying sessions = "drop": a switch loses every session) and the same
tests run again. What Tomcat's own autoDeploy does is a
measurement (`./dev.sh test -m measure`).

Each rollout prints `[mode] what: requests=N failed=F lost=L` (pytest -s).
"""

from __future__ import annotations

import hashlib
import http.client
import re
import time

import pytest

from conftest import host_state, new_lab, real_msm_repo, wait_answered
from sampleapp import CART_COMPUTED, CART_COMPUTED_FIELD, CART_FIELD, CART_V1, CART_V2, build_war
from tcsession import status
from tcsession.apply import Event
from tcsession.deploy import deploy
from tcsession.errors import TcsessionError
from tcsession.inventory import load_inventory
from tcsession.load import Load
from tcsession.rollback import history, rollback
from tcsession.steps import CountSessions, RestartTomcat
from tcsession.ui import war_versions

pytestmark = pytest.mark.lab

MODES = ("delta", "msm")
LAB, SUBNET = "tcsadelta", "10.153.40.0/24"  # one lab for both modes (tcsamsm, 10.153.41.0/24: retired)
WAR = "/var/lib/tomcat10/webapps/sample.war"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    """The lab (fresh hosts) and the sample WARs, for both modes."""
    for handle in new_lab(tmp_path_factory, LAB, SUBNET):
        tmp = handle.inv_path.parent
        handle.wars = {"v1": build_war(tmp / "sample-v1.war", "1", cart=CART_V1),
                       "v2": build_war(tmp / "sample-v2.war", "2", cart=CART_FIELD),
                       "declared": build_war(tmp / "sample-declared.war", "6", cart=CART_V2),
                       "extra": build_war(tmp / "sample-extra.war", "7", cart=CART_V1, extra=True),
                       "computed": build_war(tmp / "sample-computed.war", "8", cart=CART_COMPUTED),
                       "computedfield": build_war(tmp / "sample-computedfield.war", "9", cart=CART_COMPUTED_FIELD),
                       "nodist": build_war(tmp / "sample-nodist.war", "3", distributable=False),
                       "javax": build_war(tmp / "sample-javax.war", "4", javax_lib=True),
                       "broken": build_war(tmp / "sample-broken.war", "5", broken=True)}
        handle.sha = {k: hashlib.sha256(w.read_bytes()).hexdigest() for k, w in handle.wars.items()}
        handle.base = handle.inv_path.read_text()
        yield handle


@pytest.fixture(scope="module", params=MODES)
def lab(request, hosts):
    """The lab with version 1 deployed in one mode: delta from the fresh hosts, then msm (a mode
    switch on the same hosts). Each mode's inventories in a directory of their own."""
    mode = request.param
    tmp = hosts.inv_path.parent / mode
    tmp.mkdir(exist_ok=True)
    base = hosts.base + (f'\n[msm]\nmaven_repo = "{real_msm_repo()}"\n' if mode == "msm" else "")
    for variant, war in hosts.wars.items():
        extra = '\njakarta = "refuse"\n' if variant == "javax" else "\n"
        (tmp / f"{variant}.toml").write_text(base + f'\n[app.sample]\nwar = "{war}"{extra}')
        (tmp / f"{variant}-drop.toml").write_text(base + f'\n[app.sample]\nwar = "{war}"\nsessions = "drop"\n')
    hosts.mode, hosts.tmp = mode, tmp
    hosts.inv = load_inventory(tmp / "v1.toml")
    # delta's last test leaves another version whose sessions version 1 cannot read; a mode
    # switch loses every session anyway
    assert deploy(load_inventory(tmp / "v1-drop.toml"), mode, quiet=True).changed
    if mode == "msm":  # the variants are one cluster: each inventory's lock (<stem>.msm.lock) is the one written
        from tcsession.maven import lock_path_for

        lock = lock_path_for(tmp / "v1-drop.toml").read_bytes()
        for inv in tmp.glob("*.toml"):
            if not lock_path_for(inv).exists():
                lock_path_for(inv).write_bytes(lock)
    yield hosts


def inv_for(lab, variant: str):
    return load_inventory(lab.tmp / f"{variant}.toml")


def node_page(inv, name: str) -> str:
    """The sample page straight from one Tomcat (not through nginx)."""
    t = inv.host(name)
    conn = http.client.HTTPConnection(t.address, t.http_port, timeout=10)
    try:
        conn.request("GET", "/sample/")
        r = conn.getresponse()
        return f"{r.status} {r.read().decode('utf-8', 'replace')}"
    finally:
        conn.close()


def war_sha(lab) -> dict[str, str]:
    return {t: lab.check(t, f"sha256sum {WAR}").split()[0] for t in ("tomcat1", "tomcat2")}


def snapshot(lab) -> dict:
    """What must not change when a deploy is refused: every managed file's checksum, every PID,
    the packages, the deploy records (conftest.host_state: one checked command per host)."""
    units = ("tomcat10", "memcached") if lab.mode == "msm" else ("tomcat10",)
    return {"nginx": host_state(lab, "nginx", files=("/etc/nginx/conf.d/tcsession.conf",), units=("nginx",)),
            **{t: host_state(lab, t, files=("/etc/tomcat10/server.xml", WAR), units=units,
                             globs=("/etc/tomcat10/Catalina/localhost/*.xml",)) for t in ("tomcat1", "tomcat2")}}


def diagnose(lab) -> str:
    """What nginx and the Tomcats logged lately (shown when a load saw failures)."""
    out = lab.run("nginx", "tail -n 20 /var/log/nginx/error.log").stdout
    for t in ("tomcat1", "tomcat2"):
        out += f"\n--- {t}\n" + lab.run(t, "journalctl -u tomcat10 -n 40 --no-pager -o short-precise").stdout[-4000:]
    return out


def record(lab, what: str, r) -> None:
    print(f"\n[{lab.mode}] {what}: requests={r.requests} failed={r.failed} lost={r.lost_updates}")


def test_version_1_serves_on_every_node(lab):
    for t in ("tomcat1", "tomcat2"):
        page = node_page(lab.inv, t)
        assert page.startswith("200 ") and "version=1" in page and f"node={t} " in page, page
    assert war_sha(lab) == {"tomcat1": lab.sha["v1"], "tomcat2": lab.sha["v1"]}
    report = status.cluster_report(lab.inv, session_requests=5)
    assert report.healthy, ([(h.name, h.problems) for h in report.hosts], report.app_problems)
    assert report.apps == (("/sample", (("tomcat1", lab.sha["v1"], "200"), ("tomcat2", lab.sha["v1"], "200"))),)


def test_refused_wars_change_nothing_on_any_host(lab):
    refusals = [("javax", "refers to javax.servlet classes, which Tomcat 10 does not have")]
    if lab.mode == "delta":  # msm keeps sessions without <distributable/>
        refusals.append(("nodist", "has no <distributable/>"))
    before = snapshot(lab)
    for variant, says in refusals:
        with pytest.raises(TcsessionError) as e:
            deploy(inv_for(lab, variant), lab.mode, quiet=True)
        assert says in str(e.value) and "tcsession changed nothing" in str(e.value), str(e.value)
        assert "\n" not in str(e.value)
        assert snapshot(lab) == before, variant
    # the session-compatibility gate: one line per class, before any host changes
    with pytest.raises(TcsessionError) as e:
        deploy(inv_for(lab, "declared"), lab.mode, quiet=True)
    print(f"\n[{lab.mode}] refused: {e.value}")
    assert ("  sample.Cart (WEB-INF/classes): serialVersionUID 1L -> 2L: the declared value changed; "
            "declare private static final long serialVersionUID = 1L; in sample.Cart") in str(e.value).splitlines()
    assert str(e.value).endswith("(tcsession changed nothing)")
    assert snapshot(lab) == before


def test_rollout_to_version_2_and_rollback_under_load(lab):
    v1, v2 = inv_for(lab, "v1"), inv_for(lab, "v2")
    events: list[Event] = []
    with Load(v2.nginx.address, v2.nginx.http_port, sessions=5, rate=20, mode=lab.mode, path="/sample/") as load:
        wait_answered(load)
        report = deploy(v2, lab.mode, quiet=True, on_event=events.append)
        wait_answered(load)
    r = load.result
    record(lab, "rollout v1 -> v2 under load", r)
    assert report.changed and report.deploy_id
    assert r.requests > 60 and (r.failed, r.lost_updates) == (0, 0), (r.errors, diagnose(lab), [
        (e.kind, e.step.host, e.text[:300]) for e in events])
    restarts = [e for e in events if e.kind == "done" and isinstance(e.step, RestartTomcat)]
    assert [e.step.host for e in restarts] == ["tomcat1", "tomcat2"]  # one node at a time, in order
    for e in restarts:
        assert "sample.war" in e.text and "/sample HTTP 200" in e.text, e.text
        if lab.mode == "delta":
            assert "session state received" in e.text, e.text
    for t in ("tomcat1", "tomcat2"):
        page = node_page(v2, t)
        assert page.startswith("200 ") and "version=2" in page, page
    assert war_sha(lab) == {"tomcat1": lab.sha["v2"], "tomcat2": lab.sha["v2"]}
    # inv history: which WAR this deploy rolled out
    recs = [rec for recs in history(v2).values() for rec in recs if rec.id == report.deploy_id]
    assert war_versions(recs) == f"sample.war {lab.sha['v2'][:12]}"
    st = status.cluster_report(v2, session_requests=3)
    assert st.apps == (("/sample", (("tomcat1", lab.sha["v2"], "200"), ("tomcat2", lab.sha["v2"], "200"))),)
    assert not st.app_problems and st.healthy, [(h.name, h.problems) for h in st.hosts]

    with Load(v1.nginx.address, v1.nginx.http_port, sessions=5, rate=20, mode=lab.mode, path="/sample/") as load:
        wait_answered(load)
        assert rollback(v1, quiet=True) == [report.deploy_id]
        wait_answered(load)
    r = load.result
    record(lab, "rollback v2 -> v1 under load", r)
    assert r.requests > 60 and (r.failed, r.lost_updates) == (0, 0), (r.errors, diagnose(lab))
    for t in ("tomcat1", "tomcat2"):
        page = node_page(v1, t)
        assert page.startswith("200 ") and "version=1" in page, page
    assert war_sha(lab) == {"tomcat1": lab.sha["v1"], "tomcat2": lab.sha["v1"]}
    assert not deploy(v1, lab.mode, quiet=True).changed  # back exactly at version 1


def test_a_version_that_does_not_come_up_stops_the_rollout_on_its_node(lab):
    """A WAR whose context fails to start: the rollout stops on the first node with its log lines,
    that node is stopped (nginx sends its sessions on), the other keeps serving version 1; `inv
    rollback` puts version 1 back on it."""
    from tcsession.client import SessionClient

    v1 = inv_for(lab, "v1")
    with pytest.raises(TcsessionError) as e:
        deploy(inv_for(lab, "broken"), lab.mode, quiet=True)
    msg = str(e.value)
    print(f"\n[{lab.mode}] broken version: {msg[:600]}")
    assert "tomcat1" in msg and "/sample answered 404 after the start" in msg and "last log lines" in msg, msg
    assert "no.such.Listener" in msg or "startup failed" in msg, msg
    assert war_sha(lab) == {"tomcat1": lab.sha["broken"], "tomcat2": lab.sha["v1"]}
    assert lab.check("tomcat1", "systemctl is-active tomcat10 || true").strip() != "active"
    assert "version=1" in node_page(v1, "tomcat2")
    client = SessionClient(v1.nginx.address, v1.nginx.http_port, path="/sample/", mode=lab.mode)
    for _ in range(5):
        client.request()
    assert client.run.ok and client.run.last_count == 5 and set(client.run.nodes) == {"tomcat2"}, client.run.to_dict()
    assert len(rollback(v1, quiet=True)) == 1
    assert war_sha(lab) == {"tomcat1": lab.sha["v1"], "tomcat2": lab.sha["v1"]}
    for t in ("tomcat1", "tomcat2"):
        assert "version=1" in node_page(v1, t)
    assert not deploy(v1, lab.mode, quiet=True).changed


# Measured in the lab (Tomcat 10.1.x, Debian's autoDeploy="true"): does autoDeploy serve a WAR
# written into a running node within 30 s? msm: no (the context comes from the descriptor
# conf/Catalina/localhost/sample.xml tcsession writes; the node went on serving the old version).
AUTODEPLOY_SERVES_NEW_WAR = {"delta": True, "msm": False}


@pytest.mark.measure
def test_measured_autodeploy_redeploy_of_a_changed_war(lab):
    """What Tomcat's own autoDeploy does when the WAR of a running node changes (tcsession does not
    rely on it: it stops the drained node, writes, starts): is the new version served, and does a
    session go on? Measured on one node, straight at it (no nginx); then put back."""
    from tcsession.client import SessionClient

    inv = inv_for(lab, "v1")
    t1 = inv.host("tomcat1")
    client = SessionClient(t1.address, t1.http_port, path="/sample/", mode=lab.mode)
    for _ in range(5):
        client.request()
    assert client.run.ok and client.run.last_count == 5, client.run.to_dict()
    v2 = lab.wars["v2"].read_bytes()
    started = time.monotonic()
    lab.check("tomcat1", shell_put(WAR, v2))
    served = False
    for _ in range(60):  # bounded: 30 s
        if "version=2" in node_page(inv, "tomcat1"):
            served = True
            break
        time.sleep(0.5)
    seconds = time.monotonic() - started
    for _ in range(3):
        client.request()
    run = client.run
    print(f"\n[{lab.mode}] autoDeploy, WAR v2 written into running tomcat1: new version served: {served} "
          f"({seconds:.1f} s); the session then: requests={run.requests} failed={run.failed} "
          f"lost={run.lost_updates} count={run.last_count}")
    assert served == AUTODEPLOY_SERVES_NEW_WAR[lab.mode]
    if served:  # the session went on through the redeploy (DeltaManager: the peer sent the state)
        assert run.ok and run.last_count == 8 and run.lost_updates == 0, run.to_dict()
    # back to version 1 the tcsession way: a deploy sees the WAR differ and rolls it (drained restart)
    assert deploy(inv, lab.mode, quiet=True).changed
    assert war_sha(lab)["tomcat1"] == lab.sha["v1"] and "version=1" in node_page(inv, "tomcat1")
    assert not deploy(inv, lab.mode, quiet=True).changed


def shell_put(path: str, data: bytes) -> str:
    from tcsession import shell

    return shell.put_file(path, data, "root:root", "644")


def node_sessions(inv, name: str) -> int:
    """How many sessions /sample holds on one Tomcat, asked in its JVM (sessions.jsp)."""
    t = inv.host(name)
    conn = http.client.HTTPConnection(t.address, t.http_port, timeout=10)
    try:
        conn.request("GET", "/sample/sessions.jsp")
        r = conn.getresponse()
        body = r.read().decode()
        assert r.status == 200 and body.startswith("sessions="), body
        return int(body.split("=", 1)[1])
    finally:
        conn.close()


def memcached_sessions(address: str, port: int) -> int:
    """MSM's sessions stored in one memcached node, counted here (lru_crawler metadump: every key
    but MSM's validity, backup and lock ones): what the deploy's count must equal."""
    import socket
    from urllib.parse import unquote

    with socket.create_connection((address, port), timeout=5) as s:
        s.sendall(b"lru_crawler metadump all\r\n")
        data = b""
        while not data.endswith(b"END\r\n") and (chunk := s.recv(65536)):
            data += chunk
    keys = [unquote(l.split()[0][4:]) for l in data.decode().splitlines() if l.startswith("key=")]
    return sum(1 for k in keys if not k.startswith(("validity:", "bak:", "lock:")))


def drop_proof(lab):
    """sessions = "drop" from whatever the nodes run: the count each node gives before anything
    changes equals what its Manager holds (msm: its memcached node holds them); the rollout goes
    through; those sessions are gone; the next incompatible version (keep) is refused, naming
    the class. It leaves the nodes on the "computed" version: the mode's last test."""
    from tcsession.client import SessionClient

    v1 = inv_for(lab, "v1")
    clients = [SessionClient(v1.nginx.address, v1.nginx.http_port, path="/sample/", mode=lab.mode) for _ in range(4)]
    for c in clients:
        for _ in range(3):
            c.request()
        assert c.run.ok and c.run.last_count == 3, c.run.to_dict()
    held = {t: node_sessions(v1, t) for t in ("tomcat1", "tomcat2")}
    stored = {t: memcached_sessions(v1.host(t).address, v1.msm.memcached_port) for t in ("tomcat1", "tomcat2")
              } if lab.mode == "msm" else {}
    events: list[Event] = []
    started = time.monotonic()
    report = deploy(inv_for(lab, "computed-drop"), lab.mode, quiet=True, on_event=events.append)
    seconds = time.monotonic() - started
    said = {e.step.host: e.text for e in events if e.kind == "done" and isinstance(e.step, CountSessions)}
    print(f"\n[{lab.mode}] drop: held (sessions.jsp) {held}, in memcached {stored}; the deploy said {said}; "
          f"{seconds:.1f} s: "
          + ", ".join(f"{e.step.host} {type(e.step).__name__} {e.seconds:.1f} s" for e in events if e.kind == "done"))
    assert report.changed and set(said) == {"tomcat1", "tomcat2"}
    for t, text in said.items():
        assert text.startswith(f"holds {held[t]} session(s) of /sample"), (t, text, held)
        if lab.mode == "delta":
            assert held[t] >= len(clients)  # every node holds every session
    if lab.mode == "msm":  # non-sticky: the sessions live in memcached, each node asked of its own
        for t, text in said.items():
            assert f"{stored[t]} session(s) in memcached {v1.host(t).address}:" in text, (t, text, stored)
        assert sum(stored.values()) >= len(clients), stored
    assert war_sha(lab) == {"tomcat1": lab.sha["computed"], "tomcat2": lab.sha["computed"]}
    for c in clients:  # lost, as announced: the next request starts a new session
        c.request()
        assert c.run.last_count == 1 and c.run.lost_updates == 3, c.run.to_dict()
    # the next version's undeclared Cart gains a field: refused, naming it
    before = snapshot(lab)
    with pytest.raises(TcsessionError) as e:
        deploy(inv_for(lab, "computedfield"), lab.mode, quiet=True)
    assert "sample.Cart (WEB-INF/classes): serialVersionUID " in str(e.value), str(e.value)
    assert "computed (none declared) and the class changed: field(s) added: added" in str(e.value)
    assert snapshot(lab) == before


# The gate's rollouts that leave the nodes on another version than 1: each mode's last tests (the
# next mode's first deploy is a mode switch, which loses every session anyway: it says
# sessions = "drop").


@pytest.mark.only_for("delta")  # the old-version peer receives the new version's sessions by replication;
# msm's drop: test_measured_sessions_drop_in_msm_mode (-m measure)
def test_an_old_version_peer_stops_the_rollout_then_sessions_drop_rolls_it(lab):
    """Version 7 keeps sample.Extra (a class version 1 lacks) in the session: the gate passes it
    (the classes both have are compatible), tomcat1 restarts with it, its application check
    creates a session that DeltaManager replicates to tomcat2, which cannot deserialize it: the
    rollout stops there, naming tomcat2's line, and tomcat2 is not touched. Then, from that
    mixed cluster, sessions = "drop" (drop_proof)."""
    pid2 = lab.pid("tomcat2", "tomcat10")
    with pytest.raises(TcsessionError) as e:
        deploy(inv_for(lab, "extra"), lab.mode, quiet=True)
    msg = str(e.value)
    print(f"\n[{lab.mode}] old-version peer: {msg[:800]}")
    first = re.sub(r"^deploy \S+ stopped: ", "", msg.splitlines()[0])  # (the failure's own line, once)
    assert first.startswith("tomcat2: tomcat10 (still running the previous version) logged a session it could not "
                          "deserialize (the application's versions disagree) once tomcat1 restarted: "), msg
    assert "sample.Extra" in first, msg
    assert war_sha(lab) == {"tomcat1": lab.sha["extra"], "tomcat2": lab.sha["v1"]}
    assert lab.pid("tomcat2", "tomcat10") == pid2
    drop_proof(lab)


@pytest.mark.measure
@pytest.mark.only_for("msm")  # delta's drop: in the default suite
def test_measured_sessions_drop_in_msm_mode(lab):
    drop_proof(lab)


@pytest.mark.measure
@pytest.mark.only_for("delta")  # BackupManager is a delta-mode manager
def test_measured_backupmanager_peer_that_cannot_read_stops_the_rollout(lab):
    """[delta] manager = "backup": the same old-version peer case as with DeltaManager, to see
    BackupManager's deserialization line (tribes' replicated map) stop the rollout at tomcat1."""
    extra = '\n[delta]\nmanager = "backup"\n'
    v1 = lab.tmp / "backup-v1.toml"
    v1.write_text((lab.tmp / "v1-drop.toml").read_text() + extra)
    x = lab.tmp / "backup-extra.toml"
    x.write_text((lab.tmp / "extra.toml").read_text() + extra)
    assert deploy(load_inventory(v1), lab.mode, quiet=True).changed  # from whatever version the nodes run
    assert war_sha(lab) == {"tomcat1": lab.sha["v1"], "tomcat2": lab.sha["v1"]}
    pid2 = lab.pid("tomcat2", "tomcat10")
    with pytest.raises(TcsessionError) as e:
        deploy(load_inventory(x), lab.mode, quiet=True)
    msg = str(e.value)
    print(f"\n[backup] old-version peer: {msg[:900]}")
    first = re.sub(r"^deploy \S+ stopped: ", "", msg.splitlines()[0])  # (the failure's own line, once)
    assert first.startswith("tomcat2: tomcat10 (still running the previous version) logged a session it could not "
                          "deserialize"), msg
    assert lab.pid("tomcat2", "tomcat10") == pid2

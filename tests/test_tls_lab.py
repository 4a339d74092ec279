"""[tls] on real hosts (delta mode, bookworm): a session over verified HTTPS through nginx (a CA
and certificates the test makes, tests/tlsca.py) survives the loss of its Tomcat (stop, then
SIGKILL); its cookie is Secure and HttpOnly; http:// answers a redirect to https://; Tomcat logs
the client's address (RemoteIpValve); the key is root-only 0600 on the nginx host and in no
output; a rotation under load reloads nginx, restarts no Tomcat, and loses nothing; a bad pair is
refused before any change."""

from __future__ import annotations

import http.client
import subprocess
import sys

import pytest

from conftest import ROOT, LabHandle, real_msm_repo, write_lab_inventory
from tcsession import shell, status
from tcsession.client import SessionClient, tls_context
from tcsession.deploy import deploy
from tcsession.errors import TcsessionError
from tcsession.inventory import load_inventory
from tcsession.load import Load
from tcsession.nginx import TLS_CERT, TLS_KEY
from tlsca import CA

pytestmark = pytest.mark.lab

NAME = "shop.tcsession.test"


@pytest.fixture(scope="module")
def tls_lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("tls")
    ca = CA()
    cert, key = ca.issue(NAME)
    (tmp / "tls").mkdir()
    (tmp / "tls/fullchain.pem").write_bytes(cert)
    (tmp / "tls/privkey.pem").write_bytes(key)
    (tmp / "tls/ca.pem").write_bytes(ca.root_pem)
    extra = (f'\n[tls]\ncertificate = "tls/fullchain.pem"\nkey = "tls/privkey.pem"\nserver_name = "{NAME}"\n'
             'ca = "tls/ca.pem"\nhsts = 31536000\n' f'\n[msm]\nmaven_repo = "{real_msm_repo()}"\n')
    extra += "\n[rolling]\ndrain_timeout = 3\n"  # (proven below: nginx's old workers end that soon)
    # the membership its failover claims were made with (a new cluster's default became static: after
    # a Tomcat was killed and started again, the other once did not list it yet when status ran)
    extra += '\n[delta]\nmembership = "multicast"\n'
    path = write_lab_inventory(tmp, name="tcstls", subnet="10.153.77.0/24", extra=extra)
    path.write_text(path.read_text().replace("test_page = true", 'test_page = true\nsame_site = "lax"', 1))
    handle = LabHandle(path).up()
    handle.tmp, handle.ca, handle.key = tmp, ca, key
    try:
        yield handle
    finally:
        handle.down()


def ok(lab, host: str, command: str) -> str:
    r = lab.run(host, command)
    assert r.ok, (host, command, r.stdout, r.stderr)
    return r.stdout


def https_client(lab, mode: str = "delta") -> SessionClient:
    return SessionClient(lab.inv.nginx.address, 443, server_name=NAME, context=tls_context(str(lab.tmp / "tls/ca.pem")),
                         mode=mode)


def https_connection(lab):
    from tcsession.client import VerifiedTls

    return VerifiedTls(lab.inv.nginx.address, 443, NAME, tls_context(str(lab.tmp / "tls/ca.pem")), 10)


def test_a_session_over_verified_https_survives_its_tomcat_and_its_cookie_is_secure(tls_lab):
    lab = tls_lab
    report = deploy(lab.inv, "delta", quiet=True)
    assert report.changed
    client = https_client(lab)
    for _ in range(5):
        client.request()
    run = client.run
    assert run.ok and run.last_count == 5, run.to_dict()
    assert {"secure", "httponly", "samesite=lax"} <= set(run.cookie_attributes), run.cookie_attributes
    # an untrusted client (the system's store knows not this CA) is refused: the check is real
    stranger = SessionClient(lab.inv.nginx.address, 443, server_name=NAME)
    stranger.request()
    assert stranger.run.failed == 1 and "CERTIFICATE_VERIFY_FAILED" in stranger.run.errors[0]
    # plain HTTP: a redirect to https, to the same path
    conn = http.client.HTTPConnection(lab.inv.nginx.address, 80, timeout=10)
    conn.request("GET", "/test.jsp?x=1", headers={"Host": NAME})
    resp = conn.getresponse()
    assert resp.status == 301 and resp.getheader("Location") == f"https://{NAME}/test.jsp?x=1"
    conn.close()
    # Tomcat (the test page) saw https and the client's address (RemoteIpValve), not nginx's
    serving = run.last_node
    conn = https_connection(lab)
    conn.request("GET", "/test.jsp", headers={"Host": NAME, "Cookie": f"JSESSIONID={run.cookie}"})
    body = conn.getresponse().read().decode()
    conn.close()
    assert f"scheme=https secure=true client={lab.spec.gateway}\n" in body, body
    client.run.last_count += 1  # (that request counted too)
    # the loss of its Tomcat: stopped, then (on the next node) killed; the count goes on
    ok(lab, serving, "systemctl stop tomcat10")
    client.request()
    assert run.ok and run.last_count == 7 and run.last_node != serving, run.to_dict()
    other = run.last_node
    ok(lab, serving, "systemctl start tomcat10")
    lab.start_serving(serving, "tomcat10")
    client.request()  # DeltaManager: the restarted node has the state; the session still goes to `other`
    ok(lab, other, "systemctl kill -s KILL tomcat10")
    client.request()
    assert run.ok and run.last_count == 9, run.to_dict()
    lab.start_serving(other, "tomcat10")
    health = status.cluster_report(lab.inv, session_requests=5)
    assert health.healthy, [(h.name, h.problems) for h in health.hosts] + [health.session.to_dict()]
    assert health.session is not None and health.session.ok  # over verified HTTPS, Secure and HttpOnly
    assert {"secure", "httponly", "samesite=lax"} <= set(health.session.cookie_attributes)
    nginx_checks = {w: d for w, ok, d in next(h for h in health.hosts if h.role == "nginx").checks}
    assert nginx_checks["certificate"] == "88 days left" and "(https)" in " ".join(nginx_checks)


def test_the_key_is_root_only_and_in_no_output(tls_lab):
    lab = tls_lab
    stat = ok(lab, "nginx", f"stat -c '%a %U:%G' {TLS_KEY} {TLS_CERT}").split("\n")
    assert stat[:2] == ["600 root:root", "644 root:root"], stat
    secret = lab.key.decode().splitlines()[1][:40]
    outputs = []
    for args in (["deploy", "--mode=delta", "--dry-run"], ["status", "--json"], ["history", "--json"], ["status"]):
        p = subprocess.run([sys.executable, "-m", "invoke", *args, "-i", str(lab.inv_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=180)
        outputs.append(p.stdout + p.stderr)
    assert all(secret not in o and "PRIVATE KEY" not in o for o in outputs)


def test_the_operators_own_nginx_settings_stay_theirs_and_a_reload_ends_in_the_drain_timeout(tls_lab):
    """A file of the operator's in /etc/nginx/tcsession.d takes effect in the HTTPS server (a
    header, a body limit, a location of their own), and a deploy neither touches it nor changes
    anything. nginx runs with worker_shutdown_timeout: an old worker still sending a long download
    (300 bytes at 10 bytes/s: 30 s) ends within [rolling] drain_timeout (3 s here) of a reload."""
    import time

    from tcsession.nginx import OPERATOR_DIR

    lab = tls_lab
    own = ('add_header X-Operator "yes" always;\nclient_max_body_size 1k;\n'
           f'location /slow {{ limit_rate 10; return 200 "{"x" * 300}"; }}\n')
    # reloaded as tcsession reloads: until the old workers (the configuration before) have exited,
    # a request may still meet one of them (a race a fast SSH round trip made visible)
    before_reload, settled = shell.nginx_reload_settled()
    ok(lab, "nginx", f"mkdir -p {OPERATOR_DIR} && cat > {OPERATOR_DIR}/own.conf <<'EOF'\n{own}EOF\n"
                     f"nginx -t 2>&1 || exit 1\n{before_reload}\nsystemctl reload nginx || exit 1\n{settled}")
    sums = f"sha256sum {OPERATOR_DIR}/own.conf /etc/nginx/conf.d/tcsession.conf"
    before = ok(lab, "nginx", sums)
    try:
        conn = https_connection(lab)
        conn.request("GET", "/test.jsp", headers={"Host": NAME})
        resp = conn.getresponse()
        resp.read()
        assert resp.getheader("X-Operator") == "yes"
        conn.request("POST", "/test.jsp", body=b"x" * 4096, headers={"Host": NAME})
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 413  # their client_max_body_size
        conn.close()
        report = deploy(lab.inv, "delta", quiet=True)
        assert not report.changed, [s.describe() for s in report.executed]
        assert ok(lab, "nginx", sums) == before
        assert "worker_shutdown_timeout 3s;" in ok(lab, "nginx", "nginx -T 2>/dev/null")
        # a long download under way, then a reload: the old worker ends when nginx cuts it
        slow = https_connection(lab)
        slow.request("GET", "/slow", headers={"Host": NAME})
        resp = slow.getresponse()
        assert resp.status == 200 and resp.read(5) == b"xxxxx"
        ok(lab, "nginx", "systemctl reload nginx")
        start = time.monotonic()
        seen = ended = None
        while time.monotonic() - start < 25:
            if lab.run("nginx", "pgrep -f '^nginx: worker process is shutting down'").ok:
                seen = True
            elif seen:
                ended = time.monotonic() - start
                break
            time.sleep(0.2)
        slow.close()
        print(f"\nan old worker sending a 30 s download ended {ended and round(ended, 1)} s after the reload "
              "(drain_timeout 3 s)")
        assert seen and ended is not None and ended < 6, (seen, ended)
    finally:
        ok(lab, "nginx", f"rm -rf {OPERATOR_DIR} && systemctl reload nginx")


def wait_for_requests(load, count: int, seconds: float = 30.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while sum(c.run.requests for c in load.clients) < count and time.monotonic() < deadline:
        time.sleep(0.05)


def test_a_rotation_under_load_reloads_nginx_only_and_loses_nothing(tls_lab):
    lab = tls_lab
    pids = {t: ok(lab, t, "systemctl show -p MainPID --value tomcat10").strip() for t in ("tomcat1", "tomcat2")}
    cert, key = lab.ca.issue(NAME)
    (lab.tmp / "tls/fullchain.pem").write_bytes(cert)
    (lab.tmp / "tls/privkey.pem").write_bytes(key)
    inv = load_inventory(lab.inv_path)
    with Load(inv.nginx.address, 443, sessions=5, rate=20, server_name=NAME,
              context=tls_context(str(lab.tmp / "tls/ca.pem"))) as load:
        wait_for_requests(load, 20)  # sessions under way before the change
        report = deploy(inv, "delta", quiet=True)
        wait_for_requests(load, sum(c.run.requests for c in load.clients) + 20)  # and after it
    r = load.result
    print(f"\nrotation under load: {r.line()}")
    assert report.changed and r.requests >= 40 and (r.failed, r.lost_updates) == (0, 0), r.errors[:5]
    assert [s.host for s in report.executed if type(s).__name__ != "CheckPorts"] == ["nginx", "nginx"], \
        [s.describe() for s in report.executed]
    assert {t: ok(lab, t, "systemctl show -p MainPID --value tomcat10").strip() for t in pids} == pids
    assert ok(lab, "nginx", f"sha256sum {TLS_CERT}").split()[0] == __import__("hashlib").sha256(cert).hexdigest()


@pytest.mark.parametrize("bad", ["other key", "expired", "other name"])
def test_a_bad_pair_is_refused_before_any_change(tls_lab, bad):
    lab = tls_lab
    before = ok(lab, "nginx", f"sha256sum {TLS_CERT} {TLS_KEY} /etc/nginx/conf.d/tcsession.conf")
    cert, key = lab.ca.issue(NAME)
    if bad == "other key":
        key = lab.ca.issue(NAME)[1]
    elif bad == "expired":
        cert, key = lab.ca.issue(NAME, days=5, start_days=-10)
    else:
        cert, key = lab.ca.issue("www.other.test")
    d = lab.tmp / f"bad-{bad.replace(' ', '-')}"
    d.mkdir()
    (d / "c.pem").write_bytes(cert)
    (d / "k.pem").write_bytes(key)
    text = lab.inv_path.read_text().replace('"tls/fullchain.pem"', f'"{d}/c.pem"').replace('"tls/privkey.pem"', f'"{d}/k.pem"')
    path = lab.tmp / f"{d.name}.toml"
    path.write_text(text)
    with pytest.raises(TcsessionError, match=r"\[tls\] (key|certificate)"):
        deploy(load_inventory(path), "delta", quiet=True)
    assert ok(lab, "nginx", f"sha256sum {TLS_CERT} {TLS_KEY} /etc/nginx/conf.d/tcsession.conf") == before


def test_msm_mode_over_https_keeps_the_session_through_a_killed_tomcat(tls_lab):
    """The same front door in msm mode (the real memcached-session-manager jars, sticky, the
    synchronous backup): a switch from delta, then a session over verified HTTPS whose Tomcat is
    killed right after answering."""
    lab = tls_lab
    report = deploy(lab.inv, "msm", quiet=True)
    assert report.changed
    client = https_client(lab, "msm")  # (MSM renames the id's node suffix on failover)
    for _ in range(4):
        client.request()
    run = client.run
    assert run.ok and run.last_count == 4 and {"secure", "httponly"} <= set(run.cookie_attributes), run.to_dict()
    serving = run.last_node
    ok(lab, serving, "systemctl kill -s KILL tomcat10")
    client.request()
    assert run.ok and run.last_count == 5 and run.last_node != serving, run.to_dict()
    lab.start_serving(serving, "tomcat10")
    health = status.cluster_report(lab.inv, session_requests=5)
    assert health.mode == "msm" and health.healthy, [(h.name, h.problems) for h in health.hosts]

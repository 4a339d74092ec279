"""memcached-session-manager with the REAL jars: the session checks the stand-in cannot make.

Runs only when TCSESSION_MAVEN_REPO names a Maven-layout directory or URL holding the real
artifacts (de.javakaffee.msm:memcached-session-manager{,-tc9}:2.3.2 and net.spy:spymemcached:2.12.3,
each with its .jar.sha1), because this machine cannot reach Maven Central. For example, on a
machine with internet access:

    mvn dependency:get -Dartifact=de.javakaffee.msm:memcached-session-manager-tc9:2.3.2
    TCSESSION_MAVEN_REPO=~/.m2/repository ./dev.sh test tests/test_msm_real.py

On bullseye (Tomcat 9: the released jars) and bookworm (Tomcat 10.1: the jars converted with
javax2jakarta): sticky, 40 requests with no lost update, the Tomcat serving the session stopped
and the other continuing it, one memcached stopped and the session going on; non-sticky,
concurrent requests on one session across both nodes with no lost update.
"""

from __future__ import annotations

import http.client
import os
import threading
import time

import pytest

from conftest import LabHandle, write_lab_inventory
from tcsession.client import SessionClient
from tcsession.deploy import deploy
from tcsession.inventory import load_inventory
from tcsession.webapp import parse_test_line

REPO = os.environ.get("TCSESSION_MAVEN_REPO")
pytestmark = [pytest.mark.lab,
              pytest.mark.skipif(not REPO, reason="set TCSESSION_MAVEN_REPO to a Maven repository with the real MSM jars")]

RELEASES = {"bullseye": ("tomcat9", "10.153.13.0/24"), "bookworm": ("tomcat10", "10.153.14.0/24")}


@pytest.fixture(scope="module", params=list(RELEASES))
def real(request, tmp_path_factory):
    release = request.param
    unit, subnet = RELEASES[release]
    tmp = tmp_path_factory.mktemp(f"real-{release}")
    (tmp / "base").mkdir()
    base = write_lab_inventory(tmp / "base", release=release, name=f"tcsr{release[:4]}", subnet=subnet)
    repo = REPO if "://" in REPO else os.path.abspath(os.path.expanduser(REPO))
    for name, sticky in (("sticky.toml", "true"), ("nonsticky.toml", "false")):
        (tmp / name).write_text(base.read_text() + f'\n[msm]\nmaven_repo = "{repo}"\nsticky = {sticky}\n')
    handle = LabHandle(tmp / "sticky.toml").up()
    handle.unit, handle.tmp = unit, tmp
    try:
        assert deploy(handle.inv, "msm", quiet=True).changed
        yield handle
    finally:
        handle.down()


def test_msm_initialized_with_the_real_jars(real):
    for host in ("tomcat1", "tomcat2"):
        log = real.run(host, f"journalctl -u {real.unit} --no-pager -o cat").stdout
        assert "MemcachedSessionService" in log and "SEVERE" not in log, log[-3000:]


def test_sticky_session_survives_a_tomcat_and_a_memcached(real):
    inv = real.inv
    client = SessionClient(inv.nginx.address, inv.nginx.http_port)
    for _ in range(40):
        client.request()
    run = client.run
    assert run.ok and run.last_count == 40, run.to_dict()
    serving = run.last_node
    other = "tomcat2" if serving == "tomcat1" else "tomcat1"
    assert real.run(serving, f"systemctl stop {real.unit}").ok
    try:
        for _ in range(10):
            client.request()
        assert run.ok and run.last_count == 50 and run.last_node == other, run.to_dict()
    finally:
        real.start_serving(serving, real.unit)
    # one memcached down: the sessions live on (MSM uses the other node)
    assert real.run(other, "systemctl stop memcached").ok
    try:
        for _ in range(10):
            client.request()
        assert run.ok and run.last_count == 60, run.to_dict()
    finally:
        assert real.run(other, "systemctl start memcached").ok


def test_non_sticky_concurrent_requests_lose_no_update(real):
    inv = load_inventory(real.tmp / "nonsticky.toml")
    assert deploy(inv, "msm", quiet=True).changed
    client = SessionClient(inv.nginx.address, inv.nginx.http_port)
    client.request()
    assert client.run.ok and client.run.last_count == 1
    cookie, counts, nodes, errors = client.run.cookie, [], set(), []
    lock = threading.Lock()

    def worker(n: int) -> None:
        for _ in range(n):
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
            if line is not None:
                with lock:
                    counts.append(line.count)
                    nodes.add(line.node)

    threads = [threading.Thread(target=worker, args=(25,)) for _ in range(4)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert time.monotonic() - started < 120 and not errors, errors[:3]
    assert sorted(counts) == list(range(2, 102)), "lost or repeated updates"
    assert nodes == {"tomcat1", "tomcat2"}

"""Shared fixtures. Lab tests build real hosts (systemd-nspawn containers) on this machine.

The tests use their own lab name and subnet (not the shipped hosts.toml's), so a developer's
lab keeps running while the tests run. Labs are always taken down in finalizers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT.parent / "shared" / "fixtures" / "tomcat"
MSM_FIXTURE_REPO = ROOT.parent / "shared" / "fixtures" / "msm" / "repo"
TEST_LAB = "tcstest"
TEST_SUBNET = "10.153.7.0/24"


def pytest_collection_modifyitems(config, items):
    if os.geteuid() == 0:
        return
    # Not a skip-forever: the lab needs root, and CI runs as root.
    for item in items:
        if "lab" in item.keywords:
            item.add_marker(pytest.mark.skip(reason="lab tests need root"))


def real_msm_repo() -> str:
    """The Maven repository holding the REAL memcached-session-manager jars: TCSESSION_MAVEN_REPO,
    else ../shared/fixtures/msm/repo. Without one the test skips, but under CI=true it fails:
    CI must prove msm with the real jars on every run."""
    repo = os.environ.get("TCSESSION_MAVEN_REPO") or (str(MSM_FIXTURE_REPO) if MSM_FIXTURE_REPO.is_dir() else "")
    if not repo:
        why = (f"no real memcached-session-manager jars: set TCSESSION_MAVEN_REPO to a Maven repository "
               f"holding them, or provide {MSM_FIXTURE_REPO}")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"CI: {why}", pytrace=False)
        pytest.skip(why)
    return repo if "://" in repo else os.path.abspath(os.path.expanduser(repo))


def write_lab_inventory(tmp_path: Path, tomcats: int = 2, release: str = "bookworm",
                        extra: str = "", name: str = TEST_LAB, subnet: str = TEST_SUBNET) -> Path:
    from tcsession import lab

    path = tmp_path / "hosts.toml"
    path.write_text(lab.render_inventory(name, release, tomcats, subnet) + extra)
    return path


class LabHandle:
    """A running test lab: its inventory, spec, and a Remote to run commands on its hosts."""

    def __init__(self, inv_path: Path):
        from tcsession import lab
        from tcsession.inventory import load_inventory

        self.inv_path = inv_path
        self.inv = load_inventory(inv_path)
        self.spec = lab.spec_from_inventory(self.inv)

    def up(self):
        from tcsession import lab

        lab.up(self.spec, log=lambda *_: None)
        return self

    def down(self):
        from tcsession import lab

        lab.down(self.spec, log=lambda *_: None)

    def run(self, name: str, command: str):
        from tcsession.remote import Remote

        with Remote(self.inv) as r:
            return r.run(self.inv.host(name), command)

    def start_serving(self, name: str, unit: str) -> None:
        """Start a Tomcat that a test stopped, and wait (at most 60 s) until it serves the test page."""
        r = self.run(name, f"systemctl start {unit} && for i in $(seq 1 240); do "
                     "curl -sf -o /dev/null http://$(hostname -i | cut -d' ' -f1):8080/test.jsp && exit 0; "
                     "sleep 0.25; done; exit 1")
        assert r.ok, r.why()


def assert_fails_over(lab, inv, unit: str = "tomcat10", mode: str = "delta", before: int = 10, after: int = 5) -> None:
    """One session through nginx: `before` requests, then its Tomcat stopped and `after` more,
    answered by another node with the count going on; the Tomcat is started again."""
    import time

    from tcsession.client import SessionClient

    client = SessionClient(inv.nginx.address, inv.nginx.http_port, mode=mode)
    for _ in range(before):
        client.request()
    run = client.run
    assert run.ok and run.last_count == before, run.to_dict()
    serving = run.last_node
    if mode == "msm" and getattr(inv.msm, "backup", "sync") == "async":
        # MSM stores the last request's session after the response: wait (at most 5 s) until the
        # memcached node its id names holds that count (MSM's Java serialization of the attributes:
        # "count" then its Integer, a back-reference "sq" + 4-byte handle, or a new class
        # description ending "xp", then the 4-byte value; seen in the lab). With backup = "sync"
        # (the default) it is there before the response.
        import re
        import socket
        import struct

        sid = run.session_ids[-1]
        node = re.search(r"-(n\d+)(?:\.|$)", sid).group(1)
        host = next(t for t in inv.tomcats if t.name == f"tomcat{node[1:]}")
        keys = sorted({sid, sid.split(".", 1)[0]})
        deadline = time.monotonic() + 5
        while True:
            with socket.create_connection((host.address, inv.msm.memcached_port), timeout=2) as s:
                s.sendall(b"".join(b"get %s\r\n" % k.encode() for k in keys))
                answer = b""
                while answer.count(b"END\r\n") < len(keys) and (chunk := s.recv(65536)):
                    answer += chunk
            stored = re.search(rb"\x00\x05count(?:sq\x00~..|sr.*?xp)(....)", answer, re.S)
            if (stored and struct.unpack(">i", stored.group(1))[0] == before) or time.monotonic() >= deadline:
                break
            time.sleep(0.05)
    assert lab.run(serving, f"systemctl stop {unit}").ok
    try:
        for _ in range(after):
            client.request()
        assert run.ok and run.last_count == before + after and run.last_node != serving, run.to_dict()
    finally:
        lab.start_serving(serving, unit)


def rollback_everything(inv) -> None:
    """`inv rollback` until nothing is left to roll back."""
    from tcsession.errors import TcsessionError
    from tcsession.rollback import rollback

    while True:
        try:
            rollback(inv, quiet=True)
        except TcsessionError as e:
            assert "nothing to roll back" in str(e)
            return


@pytest.fixture(scope="module")
def fresh_lab(tmp_path_factory):
    """A lab of fresh hosts for one test module (boot takes about 2 s)."""
    handle = LabHandle(write_lab_inventory(tmp_path_factory.mktemp("lab"))).up()
    try:
        yield handle
    finally:
        handle.down()

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


def pytest_configure(config):
    # The machine's own ~/.ssh/config is never read by a test (tests of the SSH config give
    # theirs, or point HOME at a directory of their own and clear this).
    os.environ.setdefault("TCSESSION_SSH_CONFIG", "none")
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # an xdist worker is given COLUMNS=80 and LINES=24 (execnet); the commands the tests run
        # would then wrap their piped output at 80 columns, which no operator's pipe does
        os.environ.pop("COLUMNS", None)
        os.environ.pop("LINES", None)


def _uses_shared_cluster(item) -> bool:
    return "shared_cluster" in getattr(item, "fixturenames", ())


@pytest.hookimpl(tryfirst=True)  # before xdist reads the xdist_group marks
def pytest_collection_modifyitems(config, items):
    if os.environ.get("PYTEST_XDIST_WORKER"):
        # `./dev.sh test` runs two workers (pytest-xdist, --dist loadgroup): each module is one
        # unit of work, and every module on the shared cluster one unit together (the cluster is a
        # session fixture: one worker, one cluster). The longest units first (the shared cluster's
        # modules, then the other labs), the unit tests last to fill the gaps (stable sort: each
        # module keeps its tests' order).
        for item in items:
            group = "shared-cluster" if _uses_shared_cluster(item) else item.nodeid.split("::")[0]
            item.add_marker(pytest.mark.xdist_group(group))
        items[:] = sorted(items, key=lambda item: (not _uses_shared_cluster(item), "lab" not in item.keywords))
    else:
        # The tests on the shared cluster run last (in their modules' order): the cluster is then
        # up only while they run, never idle beside another lab (sorted is stable: every other test
        # keeps its place, and each module stays in one piece since all its tests use it or none).
        items[:] = sorted(items, key=_uses_shared_cluster)
    # @pytest.mark.measure_for("bullseye"): that parameter's instance is a measurement (its claim
    # is made by the test's other instances in the default run); marked before `-m` deselects
    # @pytest.mark.only_for("delta"): the test's other instances are not collected at all (a
    # claim of one mode in a module parametrized by mode): deselected, never skipped
    def wrong_instance(item) -> bool:
        params = {str(v) for v in getattr(getattr(item, "callspec", None), "params", {}).values()}
        return any(not set(m.args) & params for m in item.iter_markers("only_for"))

    dropped = [item for item in items if wrong_instance(item)]
    if dropped:
        config.hook.pytest_deselected(items=dropped)
        items[:] = [item for item in items if not wrong_instance(item)]
    for item in items:
        for m in item.iter_markers("measure_for"):
            params = getattr(getattr(item, "callspec", None), "params", {})
            if set(m.args) & {str(v) for v in params.values()}:
                item.add_marker(pytest.mark.measure)
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


_OWN_LABS: dict[tuple[str, str], tuple[str, str]] = {}


def own_lab(name: str, subnet: str) -> tuple[str, str]:
    """The lab name and subnet a test asked for, or, when TCSESSION_TEST_LAB_PREFIX is set (an
    engineer sharing the machine: e.g. "tcscmp" with TCSESSION_TEST_SUBNETS="10.153.100.0/24
    10.153.101.0/24"), the next of their own (prefix1, prefix2, ... on their subnets in turn)."""
    prefix = os.environ.get("TCSESSION_TEST_LAB_PREFIX", "")
    if not prefix:
        return name, subnet
    subnets = os.environ.get("TCSESSION_TEST_SUBNETS", "").split()
    if not subnets:
        pytest.fail("TCSESSION_TEST_LAB_PREFIX is set without TCSESSION_TEST_SUBNETS (the subnets of your labs)",
                    pytrace=False)
    if (name, subnet) not in _OWN_LABS:
        # on pytest-xdist workers (gw0, gw1, ...) each worker takes its own names and its own share
        # of the subnets, so that two workers never build the same lab
        worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
        index = int(worker[2:]) if worker[2:].isdigit() else 0
        count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
        mine = subnets[index::count] or subnets
        n = len(_OWN_LABS)
        _OWN_LABS[(name, subnet)] = (f"{prefix}{n * count + index + 1}", mine[n % len(mine)])
    return _OWN_LABS[(name, subnet)]


def write_lab_inventory(tmp_path: Path, tomcats: int = 2, release: str = "bookworm",
                        extra: str = "", name: str = TEST_LAB, subnet: str = TEST_SUBNET) -> Path:
    from tcsession import lab

    name, subnet = own_lab(name, subnet)
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

    def check(self, name: str, command: str) -> str:
        """Run `command` on host `name`, assert that it succeeded, return its standard output.
        Every helper that reads a host goes through here: a failed command's empty output must
        never pass for "nothing changed"."""
        r = self.run(name, command)
        assert r.ok, f"{name}: {command[:200]}: {r.why()}"
        return r.stdout

    def pid(self, name: str, unit: str) -> str:
        """The unit's MainPID (\"0\" when it does not run), the command checked."""
        out = self.check(name, f"systemctl show -p MainPID --value {unit}").strip()
        assert out.isdigit(), (name, unit, out)
        return out

    def start_serving(self, name: str, unit: str) -> None:
        """Start a Tomcat that a test stopped, and wait (at most 60 s) until it serves the test page."""
        r = self.run(name, f"systemctl start {unit} && for i in $(seq 1 240); do "
                     "curl -sf -o /dev/null http://$(hostname -i | cut -d' ' -f1):8080/test.jsp && exit 0; "
                     "sleep 0.25; done; exit 1")
        assert r.ok, r.why()


def session_of(inv, requests: int, mode: str = "delta"):
    """A session through the inventory's nginx: `requests` requests, each answered with the count
    going on (checked). Its client; `client.run.last_node` is the Tomcat serving it."""
    from tcsession.client import SessionClient

    client = SessionClient(inv.nginx.address, inv.nginx.http_port, mode=mode)
    for _ in range(requests):
        client.request()
    assert client.run.ok and client.run.last_count == requests, client.run.to_dict()
    return client


def assert_fails_over(lab, inv, unit: str = "tomcat10", mode: str = "delta", before: int = 10, after: int = 5) -> None:
    """One session through nginx: `before` requests, then its Tomcat stopped and `after` more,
    answered by another node with the count going on; the Tomcat is started again."""
    import time

    client = session_of(inv, before, mode)
    run = client.run
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


def host_state(handle: LabHandle, host: str, files=(), units=(), globs=(), dirs=("/var/lib/tcsession/deploys",)) -> str:
    """What a "nothing changed" claim compares, from ONE checked command (set -e, pipefail): the
    sha256 of each of `files` (each must exist), of every file matching `globs` (may be none),
    the MainPID of each of `units`, the listing of each of `dirs` (or that it is absent), and the
    checksum of the installed packages' list."""
    parts = ["set -e -o pipefail"]
    if files:
        parts.append("sha256sum " + " ".join(files))
    for g in globs:
        parts.append(f"for f in {g}; do if [ -e \"$f\" ]; then sha256sum \"$f\"; fi; done")
    for u in units:
        parts.append(f"pid=$(systemctl show -p MainPID --value {u}); echo \"{u} pid $pid\"")
    for d in dirs:
        parts.append(f"if [ -d {d} ]; then echo '{d}:'; ls -1 {d}; else echo 'no {d}'; fi")
    parts.append("p=$(dpkg-query -W -f='${Package} ${Version}\\n' | sha256sum | cut -c1-64); echo \"packages $p\"")
    out = handle.check(host, "; ".join(parts))
    assert out.count("\n") >= len(files) + len(units) + 1 and "packages " in out, out
    return out


def running_lab(inv_path: Path, deploy_mode: str | None = None, prepare=None):
    """THE lab fixture helper: bring up the lab of `inv_path`, let `prepare(handle)` adjust the
    handle (e.g. point it at another inventory beside the lab's), deploy `deploy_mode` from the
    fresh hosts when given (asserting it changed something), yield the handle; the lab is taken
    down in the finalizer, whatever happened. Use as `yield from running_lab(...)` in a fixture."""
    handle = LabHandle(inv_path).up()
    try:
        if prepare is not None:
            prepare(handle)
        if deploy_mode is not None:
            from tcsession.deploy import deploy

            report = deploy(handle.inv, deploy_mode, quiet=True)
            assert report.changed and report.deploy_id
        yield handle
    finally:
        handle.down()


def new_lab(tmp_path_factory, name: str, subnet: str, *, tomcats: int = 2, release: str = "bookworm",
            extra: str = "", deploy_mode: str | None = None, prepare=None):
    """Fresh hosts of a test's own (lab `name` on `subnet`): see running_lab."""
    path = write_lab_inventory(tmp_path_factory.mktemp(name), tomcats=tomcats, release=release, extra=extra,
                               name=name, subnet=subnet)
    yield from running_lab(path, deploy_mode, prepare)


@pytest.fixture(scope="module")
def fresh_lab(tmp_path_factory):
    """A lab of fresh hosts for one test module (boot takes about 2 s)."""
    yield from new_lab(tmp_path_factory, TEST_LAB, TEST_SUBNET, extra=MULTICAST)


# The shared cluster and fresh_lab name multicast membership (the preflight probe, the multicast
# proof, the bound UDP port are theirs to test); a new cluster's default is static (test_waves_lab,
# test_scale_lab's static half, test_rolls_lab).
MULTICAST = '\n[delta]\nmembership = "multicast"\n'

SHARED_LAB = "tcsshare"
SHARED_SUBNET = "10.153.60.0/24"


@pytest.fixture(scope="session")
def shared_cluster(tmp_path_factory):
    """ONE delta cluster (bookworm, Tomcat 10.1, two Tomcats and nginx) deployed once from fresh
    hosts and shared by every lab test that only reads it or changes it and puts it back: most
    lab tests need a deployed cluster, not fresh hosts. Modules use it through a module fixture
    built with `shared_cluster_for_module`, which checks at the module's end that the cluster is
    back at the base deployment. A test that leaves it broken must not use it: it gets a lab of
    its own (new_lab)."""
    lab = new_lab(tmp_path_factory, SHARED_LAB, SHARED_SUBNET, deploy_mode="delta", extra=MULTICAST)
    try:
        handle = next(lab)
        restore_base(handle)  # right after the deploy from fresh hosts: nothing owed, healthy
        yield handle
    finally:
        lab.close()  # takes the lab down


def restore_base(handle: LabHandle) -> None:
    """Put the shared cluster back at its base deployment (a no-op when it is) and check it:
    status healthy in delta mode with both Tomcats members of each other's cluster."""
    from tcsession import status
    from tcsession.deploy import deploy

    deploy(handle.inv, "delta", quiet=True)
    assert not deploy(handle.inv, "delta", quiet=True).changed
    report = status.cluster_report(handle.inv, session_requests=3)
    assert report.mode == "delta" and report.healthy, [(h.name, h.problems) for h in report.hosts]


def shared_cluster_for_module(shared_cluster, tmp_path_factory, name: str):
    """The shared cluster for one module, with a directory of the module's own for inventory
    variants (`handle.tmp`); at the module's end the cluster is put back (restore_base)."""
    shared_cluster.tmp = tmp_path_factory.mktemp(name)
    try:
        yield shared_cluster
    finally:
        restore_base(shared_cluster)


def add_settings(text: str, extra: str) -> str:
    """An inventory's text with `extra`'s tables added: the keys of a table the text has already
    (say `[delta]`) go under its header (TOML defines a table once), new tables at the end; a
    key both name takes extra's value."""
    import re

    blocks = re.split(r"(?m)^(?=\[)", extra.strip("\n") + "\n")
    for block in blocks:
        if not block.strip():
            continue
        header, _, body = block.partition("\n")
        if not header.startswith("[") or f"\n{header}\n" not in f"\n{text}":
            text = text.rstrip("\n") + "\n\n" + block
            continue
        start = f"\n{text}".index(f"\n{header}\n") + len(header) + 1
        end = text.find("\n[", start)
        end = len(text) if end < 0 else end + 1
        table = text[start:end]
        for line in body.splitlines():
            key = line.split("=", 1)[0].strip()
            if key:
                table = re.sub(rf"(?m)^{re.escape(key)}\s*=.*\n?", "", table)
        text = text[:start] + body.rstrip("\n") + "\n" + table + text[end:]
    return text


def variant_inventory(handle: LabHandle, name: str, extra: str):
    """The lab's inventory plus `extra` (other settings for the same hosts: add_settings), written
    as `name` in the handle's own directory (`handle.tmp`, else beside the lab's inventory)."""
    from tcsession.inventory import load_inventory

    where = getattr(handle, "tmp", None) or handle.inv_path.parent
    path = Path(where) / name
    path.write_text(add_settings(handle.inv_path.read_text(), extra))
    return load_inventory(path)


def wait_answered(load, each: int = 2, timeout: float = 30.0) -> None:
    """Poll until every session of a running Load has had `each` more answered requests than
    now (bounded): the load window's edges, instead of a fixed sleep. Before a change it proves
    every session exists and is served; after it, that every session goes on after the change."""
    import time

    want = [len(c.run.session_ids) + each for c in load.clients]
    deadline = time.monotonic() + timeout
    while any(len(c.run.session_ids) < w for c, w in zip(load.clients, want)):
        assert time.monotonic() < deadline, (
            f"the load's sessions were not answered {each} more times in {timeout} s",
            [c.run.errors[-3:] for c in load.clients])
        time.sleep(0.05)

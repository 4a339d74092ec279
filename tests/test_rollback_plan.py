"""On real hosts: `inv rollback --dry-run` shows exactly the steps the rollback then executes, for
a first deploy (from fresh hosts), a configuration change and a mode switch (delta -> msm with
the real memcached-session-manager jars of ../shared/fixtures/msm/repo); and the deploy's dry run
shows exactly the steps its run executes."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import ROOT, LabHandle, write_lab_inventory
from tcsession.deploy import deploy
from tcsession.inventory import load_inventory
from tcsession.rollback import history, rollback

pytestmark = pytest.mark.lab

MSM_REPO = ROOT.parent / "shared" / "fixtures" / "msm" / "repo"


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rbplan")
    path = write_lab_inventory(tmp, name="tcsrbp", subnet="10.153.15.0/24")
    handle = LabHandle(path).up()
    handle.tmp = tmp
    old = os.environ.get("XDG_CACHE_HOME")
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    try:
        yield handle
    finally:
        handle.down()
        if old is None:
            os.environ.pop("XDG_CACHE_HOME", None)
        else:
            os.environ["XDG_CACHE_HOME"] = old


def variant(lab, name: str, extra: str):
    path = lab.tmp / name
    path.write_text(lab.inv_path.read_text() + extra)
    return load_inventory(path)


def undo_latest_and_compare(inv) -> str:
    dry, run = [], []
    ids = rollback(inv, dry_run=True, quiet=True, plans=dry)
    assert rollback(inv, quiet=True, plans=run) == ids
    (dplan, _), (rplan, executed) = dry[0], run[0]
    assert dplan.lines() == rplan.lines()  # the preview is the plan that ran
    assert [s.describe() for s in executed] == [s.describe() for s in rplan.steps]  # ...all of it
    return ids[0]


def test_dry_runs_show_exactly_what_runs(lab):
    if not MSM_REPO.is_dir():
        pytest.fail(f"{MSM_REPO}: the real memcached-session-manager jars are missing (shared/fixtures)")
    first = deploy(lab.inv, "delta", quiet=True)  # fresh hosts: installs, then files
    assert first.executed == first.previewed and first.deploy_id
    change = variant(lab, "change.toml", "\n[delta]\nchannel_send_options = 2\n")
    preview = deploy(change, "delta", dry_run=True, quiet=True)
    second = deploy(change, "delta", quiet=True)
    assert [s.describe() for s in preview.previewed] == [s.describe() for s in second.executed]
    msm = variant(lab, "msm.toml", f'\n[msm]\nmaven_repo = "{MSM_REPO}"\n')
    third = deploy(msm, "msm", quiet=True)
    assert third.changed and third.executed == third.previewed
    # The CLI's dry run prints the rollback's steps and changes nothing.
    before = lab.run("tomcat1", "sha256sum /etc/tomcat10/server.xml /etc/tomcat10/context.xml; ls /var/lib/tomcat10/lib")
    proc = subprocess.run([sys.executable, "-m", "invoke", "rollback", "--dry-run", "-i", str(lab.inv_path)],
                          cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert f"undo {third.deploy_id}" in proc.stdout and "restart tomcat10" in proc.stdout
    assert lab.run("tomcat1", "sha256sum /etc/tomcat10/server.xml /etc/tomcat10/context.xml; "
                   "ls /var/lib/tomcat10/lib").stdout == before.stdout
    # Undo the switch, the change, the first deploy: each dry run equal to its run.
    assert undo_latest_and_compare(lab.inv) == third.deploy_id
    assert undo_latest_and_compare(lab.inv) == second.deploy_id
    assert undo_latest_and_compare(lab.inv) == first.deploy_id
    assert all(r.rolled_back for recs in history(lab.inv).values() for r in recs)
    for t in ("tomcat1", "tomcat2"):
        r = lab.run(t, "systemctl is-active tomcat10 memcached || true")
        assert r.ok and "active\n" not in r.stdout.replace("inactive", ""), r.stdout  # stopped, as before the first

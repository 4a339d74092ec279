"""`inv lab.down` returns only when no process of the lab is left (issue 9): systemd-nspawn
used to end a second or two after `down` returned, so a script checking right after failed."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import ROOT, LabHandle, write_lab_inventory
from tcsession import lab

pytestmark = pytest.mark.lab


def _left_of(spec, recorded: set[int]) -> list[str]:
    """Independent of lab.lab_processes: every live (non-zombie) process that is a recorded
    container pid, sits in one of the lab's cgroups, or names the lab's directory."""
    marker = str(spec.state_dir).encode() + b"/"
    cgroup = f"/tcsession/{spec.name}-"
    left = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            stat = (proc / "stat").read_text()
            if stat.rsplit(")", 1)[-1].split()[0] == "Z":
                continue
            comm = (proc / "comm").read_text().strip()
            groups = (proc / "cgroup").read_text()
            args = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if int(proc.name) in recorded or cgroup in groups or (comm == "systemd-nspawn" and marker in args):
            left.append(f"{proc.name} {comm}")
    return left


@pytest.mark.parametrize("how", ["inv"])
def test_down_returns_when_no_process_is_left(tmp_path, how):
    """`inv lab.up` and `inv lab.down` as an operator runs them (the containers are not children
    of the process that takes them down). In one process, as the tests do: the same check right
    after `lab.down` in tests/test_lab.py::test_lifecycle_up_twice_stale_lab_and_down_leaves_nothing
    (one lab brought up fewer)."""
    inv_path = write_lab_inventory(tmp_path, name="tcsb1", subnet="10.153.20.0/24")
    spec = LabHandle(inv_path).spec

    def inv(*args):
        p = subprocess.run([str(ROOT / ".venv" / "bin" / "inv"), *args, "-i", str(inv_path)], cwd=ROOT,
                           capture_output=True, text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert p.returncode == 0, p.stdout + p.stderr

    recorded: set[int] = set()
    try:
        inv("lab.up") if how == "inv" else lab.up(spec, log=lambda *_: None)
        recorded = {p for p in lab.host_pids(spec).values() if p}
        assert len(recorded) == 3
        assert _left_of(spec, recorded)  # the check sees a running lab
    finally:
        if how == "inv":
            inv("lab.down")
        else:
            lab.down(spec, log=lambda *_: None)
        left = _left_of(spec, recorded)  # right away, no waiting here
        if left:
            lab.down(spec, log=lambda *_: None)
    assert left == []
    assert lab.leftovers(spec) == []

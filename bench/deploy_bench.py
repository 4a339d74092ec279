#!/usr/bin/env python3
"""Benchmark deploy and status on the lab: prints figures, asserts nothing.

    .venv/bin/python bench/deploy_bench.py [--runs 3] [--tomcats 2]

Measures, as the operator runs them (`inv ...` in a new process, Python start-up included):
deploy from fresh hosts, deploy when only the configuration changes (packages there, rolling
Tomcat restarts), a second deploy with nothing to do, and `inv status` (with its 10-request
session check). Median of --runs runs, plus the SSH commands each issues (counted in-process).
Uses its own lab (`tcsbench`, 10.153.20.0/24), so a developer's lab keeps running.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tcsession import lab, status  # noqa: E402
from tcsession.deploy import deploy  # noqa: E402
from tcsession.inventory import load_inventory  # noqa: E402


def inv_cmd(*args: str) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"bench: inv {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout[-500:]}")
    return time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tomcats", type=int, default=2)
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tcsbench-"))
    base = lab.render_inventory("tcsbench", "bookworm", args.tomcats, "10.153.20.0/24")
    inv_a, inv_b = tmp / "a.toml", tmp / "b.toml"
    inv_a.write_text(base + "\n[delta]\nchannel_send_options = 6\n")
    inv_b.write_text(base + "\n[delta]\nchannel_send_options = 2\n")
    spec = lab.spec_from_inventory(load_inventory(inv_a))
    rows = {k: [] for k in ("fresh", "change", "noop", "status")}
    commands = {}
    try:
        for i in range(args.runs):
            lab.down(spec, log=lambda *_: None)
            lab.up(spec, log=lambda *_: None)
            rows["fresh"].append(inv_cmd("deploy", "--mode=delta", "-q", "-i", str(inv_a)))
            for _ in range(1):
                rows["change"].append(inv_cmd("deploy", "--mode=delta", "-q", "-i", str(inv_b)))
                rows["change"].append(inv_cmd("deploy", "--mode=delta", "-q", "-i", str(inv_a)))
            rows["noop"] += [inv_cmd("deploy", "--mode=delta", "-q", "-i", str(inv_a)) for _ in range(3)]
            rows["status"] += [inv_cmd("status", "-i", str(inv_a)) for _ in range(3)]
        # SSH commands each issues, counted in-process.
        commands["noop"] = deploy(load_inventory(inv_a), "delta", quiet=True).commands
        commands["change"] = deploy(load_inventory(inv_b), "delta", quiet=True).commands
        commands["status"] = status.cluster_report(load_inventory(inv_a)).commands
        lab.down(spec, log=lambda *_: None)
        lab.up(spec, log=lambda *_: None)
        commands["fresh"] = deploy(load_inventory(inv_a), "delta", quiet=True).commands
    finally:
        lab.down(spec, log=lambda *_: None)
    hosts = 1 + args.tomcats
    print(f"\ntcsession delta deploy on the lab: {hosts} hosts ({args.tomcats} Tomcats), "
          f"median of {len(rows['noop'])} no-op runs / {len(rows['change'])} change runs / {len(rows['fresh'])} fresh runs")
    print(f"{'what':<34}{'median s':>10}{'min s':>8}{'max s':>8}{'SSH cmds':>10}")
    labels = {"fresh": "deploy from fresh hosts", "change": "deploy, configuration change",
              "noop": "deploy, nothing to do", "status": "inv status (10-request check)"}
    for key, label in labels.items():
        v = rows[key]
        print(f"{label:<34}{statistics.median(v):>10.2f}{min(v):>8.2f}{max(v):>8.2f}{commands.get(key, 0):>10}")


if __name__ == "__main__":
    main()

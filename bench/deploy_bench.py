#!/usr/bin/env python3
"""Benchmark deploy and status on the lab: prints figures, asserts nothing.

    .venv/bin/python bench/deploy_bench.py [--runs 3] [--tomcats 2] [--mode delta|msm] [--maven-repo DIR]

Measures, as the operator runs them (`inv ...` in a new process, Python start-up included):
deploy from fresh hosts, deploy when only the configuration changes (packages there, rolling
Tomcat restarts), a second deploy with nothing to do, and `inv status` (with its 10-request
session check). Median of --runs runs, plus the SSH commands each issues (counted in-process).
Uses its own lab (`tcsbench`, 10.153.20.0/24), so a developer's lab keeps running.
--mode msm takes the jars from --maven-repo, or builds the tests' stand-in jars (tests/standin.py:
the same sizes of work for tcsession, not memcached-session-manager) and converts them to jakarta.
"""

from __future__ import annotations

import argparse
import os
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


def inv_cmd(*args: str, ok_codes=(0,)) -> float:
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True)
    if proc.returncode not in ok_codes:
        raise SystemExit(f"bench: inv {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout[-500:]}")
    return time.monotonic() - started


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--tomcats", type=int, default=2)
    ap.add_argument("--mode", choices=("delta", "msm"), default="delta")
    ap.add_argument("--maven-repo", help="msm: a Maven-layout directory with the jars (default: the stand-in)")
    args = ap.parse_args()
    mode = args.mode
    tmp = Path(tempfile.mkdtemp(prefix="tcsbench-"))
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    base = lab.render_inventory("tcsbench", "bookworm", args.tomcats, "10.153.20.0/24")
    inv_a, inv_b = tmp / "a.toml", tmp / "b.toml"
    if mode == "delta":
        inv_a.write_text(base + "\n[delta]\nchannel_send_options = 6\n")
        inv_b.write_text(base + "\n[delta]\nchannel_send_options = 2\n")
    else:
        repo = args.maven_repo
        if repo is None:
            sys.path.insert(0, str(ROOT / "tests"))
            import standin  # noqa: PLC0415

            repo = str(standin.write_repo(tmp / "repo", standin.standin_jars()))
        inv_a.write_text(base + f'\n[msm]\nmaven_repo = "{repo}"\nrequest_uri_ignore_pattern = ".*\\\\.(ico|png)$"\n')
        inv_b.write_text(base + f'\n[msm]\nmaven_repo = "{repo}"\nrequest_uri_ignore_pattern = ".*\\\\.(ico|css)$"\n')
    spec = lab.spec_from_inventory(load_inventory(inv_a))
    rows = {k: [] for k in ("fresh", "change", "noop", "status")}
    commands = {}
    try:
        for i in range(args.runs):
            lab.down(spec, log=lambda *_: None)
            lab.up(spec, log=lambda *_: None)
            rows["fresh"].append(inv_cmd("deploy", f"--mode={mode}", "-q", "-i", str(inv_a)))
            for _ in range(1):
                rows["change"].append(inv_cmd("deploy", f"--mode={mode}", "-q", "-i", str(inv_b)))
                rows["change"].append(inv_cmd("deploy", f"--mode={mode}", "-q", "-i", str(inv_a)))
            rows["noop"] += [inv_cmd("deploy", f"--mode={mode}", "-q", "-i", str(inv_a)) for _ in range(3)]
            # the stand-in is not MSM, so status says UNHEALTHY (exit 1) about MSM's start line
            rows["status"] += [inv_cmd("status", "-i", str(inv_a), ok_codes=(0, 1) if mode == "msm" else (0,))
                               for _ in range(3)]
        # SSH commands each issues, counted in-process.
        commands["noop"] = deploy(load_inventory(inv_a), mode, quiet=True).commands
        commands["change"] = deploy(load_inventory(inv_b), mode, quiet=True).commands
        commands["status"] = status.cluster_report(load_inventory(inv_a)).commands
        lab.down(spec, log=lambda *_: None)
        lab.up(spec, log=lambda *_: None)
        commands["fresh"] = deploy(load_inventory(inv_a), mode, quiet=True).commands
    finally:
        lab.down(spec, log=lambda *_: None)
    hosts = 1 + args.tomcats
    print(f"\ntcsession {mode} deploy on the lab: {hosts} hosts ({args.tomcats} Tomcats), "
          f"median of {len(rows['noop'])} no-op runs / {len(rows['change'])} change runs / {len(rows['fresh'])} fresh runs")
    print(f"{'what':<34}{'median s':>10}{'min s':>8}{'max s':>8}{'SSH cmds':>10}")
    labels = {"fresh": "deploy from fresh hosts", "change": "deploy, configuration change",
              "noop": "deploy, nothing to do", "status": "inv status (10-request check)"}
    for key, label in labels.items():
        v = rows[key]
        print(f"{label:<34}{statistics.median(v):>10.2f}{min(v):>8.2f}{max(v):>8.2f}{commands.get(key, 0):>10}")


if __name__ == "__main__":
    main()

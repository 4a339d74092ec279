#!/usr/bin/env python3
"""Benchmark deploy and status on the lab: prints figures, asserts nothing.

    .venv/bin/python bench/deploy_bench.py [--runs 1] [--tomcats 2,8] [--mode delta|msm]
        [--maven-repo DIR] [--name tcsbench] [--subnet 10.153.20.0/24]
        [--peer pyinfra|none] [--peer-subnet 10.153.21.0/24] [--only-peer]

First (delta, unless --peer none): tcsession beside the pyinfra peer (bench/peers/pyinfra: the
same cluster the plain way, the blog's settings), 2 Tomcats, each tool on a lab of its own of the
same kind, both up at once, runs interleaved, every deploy a new process: from fresh hosts, a
configuration change (channelSendOptions 6 <-> 2) and a no-op (pyinfra from PyPI into
.cache/pyinfra-venv, not a dependency of tcsession).

For each Tomcat count (one lab after the other, in one run): deploy from fresh hosts, deploy when
only the configuration changes (rolling Tomcat restarts in waves, then with
`[rolling] max_unavailable = 1`: one at a time), a second deploy with nothing to do, and
`inv status` (with its 10-request session check). Median of --runs runs (3 no-op and status runs
each), plus the SSH commands each issues. The no-op and status rows run as the operator runs
them (`inv ...` in a new process, Python start-up included); fresh and change deploys run
in-process (to count their commands without deploying twice; start-up, about 0.3 s, not included).
Uses its own lab (`--name`, `--subnet`), so a developer's lab keeps running.
--mode msm takes the jars from --maven-repo, or builds the tests' stand-in jars (tests/standin.py:
the same sizes of work for tcsession, not memcached-session-manager) and converts them to jakarta.
"""

from __future__ import annotations

import argparse
import compileall
import os
import resource
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


def hosts_cpu(spec) -> float:
    """CPU seconds used so far by every process of the lab's hosts (their cgroups' cpu.stat:
    sshd, the shells tcsession's scripts run in, systemd, the JVMs)."""
    total = 0
    for h in spec.hosts:
        stat = next((c / "cpu.stat" for c in lab._host_cgroups(spec, h.name) if (c / "cpu.stat").exists()), None)
        if stat is None:
            raise SystemExit(f"bench: no cpu.stat for {h.name}'s cgroup")
        total += int(next(line.split()[1] for line in stat.read_text().splitlines() if line.startswith("usage_usec")))
    return total / 1e6


def inv_cmd(*args: str, ok_codes=(0,), spec=None, cpu: dict | None = None) -> float:
    """`inv ARGS` in a new process: its wall time. With `spec` and `cpu`, also appends to
    cpu["hosts"] the CPU seconds the lab's hosts used meanwhile and to cpu["control"] the
    process's own (user + system)."""
    before_hosts = hosts_cpu(spec) if spec else 0.0
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    proc = subprocess.run([sys.executable, "-m", "invoke", *args], cwd=ROOT, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode not in ok_codes:
        raise SystemExit(f"bench: inv {' '.join(args)} failed: {proc.stderr.strip() or proc.stdout[-500:]}")
    if spec is not None and cpu is not None:
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu.setdefault("hosts", []).append(hosts_cpu(spec) - before_hosts)
        cpu.setdefault("control", []).append(after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime)
    return wall


def timed_deploy(path: Path, mode: str) -> tuple[float, int]:
    started = time.monotonic()
    report = deploy(load_inventory(path), mode, quiet=True)
    return time.monotonic() - started, report.commands


def inventories(tmp: Path, base: str, mode: str, repo: str | None) -> dict[str, Path]:
    """a and b differ in one setting that changes every Tomcat's files; a1 and b1 are a and b
    restarted one node at a time."""
    if mode == "delta":
        texts = {"a": "\n[delta]\nchannel_send_options = 6\n", "b": "\n[delta]\nchannel_send_options = 2\n"}
    else:
        texts = {"a": f'\n[msm]\nmaven_repo = "{repo}"\nrequest_uri_ignore_pattern = ".*\\\\.(ico|png)$"\n',
                 "b": f'\n[msm]\nmaven_repo = "{repo}"\nrequest_uri_ignore_pattern = ".*\\\\.(ico|css)$"\n'}
    out = {}
    for k, t in texts.items():
        out[k] = tmp / f"{k}.toml"
        out[k].write_text(base + t)
        out[k + "1"] = tmp / f"{k}1.toml"
        out[k + "1"].write_text(base + t + "\n[rolling]\nmax_unavailable = 1\n")
    return out


def measure(args, tomcats: int, tmp: Path, repo: str | None) -> tuple[dict, dict]:
    mode = args.mode
    base = lab.render_inventory(args.name, "bookworm", tomcats, args.subnet)
    (tmp / str(tomcats)).mkdir()
    inv = inventories(tmp / str(tomcats), base, mode, repo)
    spec = lab.spec_from_inventory(load_inventory(inv["a"]))
    rows = {k: [] for k in ("fresh", "waves", "one", "noop", "status")}
    cpu: dict = {"noop": {}, "status": {}, "idle": []}
    commands: dict[str, int] = {}
    ok = (0, 1) if mode == "msm" and repo_is_standin(args) else (0,)
    try:
        for _ in range(args.runs):
            lab.down(spec, log=lambda *_: None)
            lab.up(spec, log=lambda *_: None)
            s, commands["fresh"] = timed_deploy(inv["a"], mode)
            rows["fresh"].append(s)
            for there, back in (("b", "a"),):
                for key, suffix in (("waves", ""), ("one", "1")):
                    s, commands[key] = timed_deploy(inv[there + suffix], mode)
                    rows[key].append(s)
                    s, _ = timed_deploy(inv[back + suffix], mode)
                    rows[key].append(s)
            rows["noop"] += [inv_cmd("deploy", f"--mode={mode}", "-q", "-i", str(inv["a"]), spec=spec, cpu=cpu["noop"])
                             for _ in range(3)]
            # the stand-in is not MSM, so status says UNHEALTHY (exit 1) about MSM's start line
            rows["status"] += [inv_cmd("status", "-i", str(inv["a"]), ok_codes=ok, spec=spec, cpu=cpu["status"])
                               for _ in range(3)]
            idle = hosts_cpu(spec)
            time.sleep(2)
            cpu["idle"].append((hosts_cpu(spec) - idle) / 2)
        commands["noop"] = deploy(load_inventory(inv["a"]), mode, quiet=True).commands
        commands["status"] = status.cluster_report(load_inventory(inv["a"])).commands
        rows["ssh"] = [ssh_floor(load_inventory(inv["a"])) for _ in range(3)]
        if tomcats >= 4:
            rows["floor_one"], rows["floor_wave"] = restart_floor(load_inventory(inv["a"]))
    finally:
        lab.down(spec, log=lambda *_: None)
    rows["cpu"] = cpu
    return rows, commands


def ssh_floor(inv) -> float:
    """New SSH connections to every host, one `true` each, in parallel: what one round trip to
    all hosts costs at the least (no facts, no planning, no Python start-up)."""
    from tcsession.remote import Remote  # noqa: PLC0415

    started = time.monotonic()
    with Remote(inv) as remote:
        results = remote.run_all(inv.hosts, "true")
    if not all(r.ok for r in results.values()):
        raise SystemExit("bench: `true` failed on a host")
    return time.monotonic() - started


def restart_floor(inv) -> tuple[list[float], list[float]]:
    """What this machine allows at best, without tcsession: half of the Tomcats (a wave) restarted
    by hand one after the other, then all at once, each until it answers the test page (no drain,
    no state or membership wait). Their ratio bounds what any wave can save here."""
    from tcsession.remote import Remote  # noqa: PLC0415

    half = list(inv.tomcats[: len(inv.tomcats) // 2])

    def script(h) -> str:
        return (f"systemctl restart tomcat10 && for i in $(seq 1 600); do "
                f"[ \"$(curl -s -o /dev/null -m 2 -w '%{{http_code}}' http://{h.address}:{h.http_port}/test.jsp)\" = 200 ] "
                "&& exit 0; sleep 0.1; done; exit 1")

    with Remote(inv) as remote:
        started = time.monotonic()
        for h in half:
            r = remote.run(h, script(h))
            if not r.ok:
                raise SystemExit(f"bench: restarting {h.name} failed: {r.why()}")
        one = time.monotonic() - started
        started = time.monotonic()
        results = remote.run_all(half, script)
        if not all(r.ok for r in results.values()):
            raise SystemExit(f"bench: restarting {len(half)} Tomcats at once failed")
        wave = time.monotonic() - started
    return [one], [wave]


PEER = ROOT / "bench" / "peers" / "pyinfra"
PYINFRA = ROOT / ".cache" / "pyinfra-venv" / "bin" / "pyinfra"


def settle(specs, busy: float = 0.1, within: float = 30.0) -> float:
    """Wait until the labs' hosts rest (together under `busy` CPU seconds per second, over half a
    second: after a change deploy their just-restarted JVMs compile for a while), at most
    `within` s; the seconds waited."""
    started = time.monotonic()
    last = sum(hosts_cpu(s) for s in specs)
    while time.monotonic() - started < within:
        time.sleep(0.5)
        now = sum(hosts_cpu(s) for s in specs)
        if (now - last) / 0.5 < busy:
            break
        last = now
    return time.monotonic() - started


def pyinfra_ready() -> Path:
    """pyinfra in a virtual environment of its own under .cache (never a tcsession dependency),
    installed from PyPI on first use."""
    if not PYINFRA.exists():
        venv = PYINFRA.parent.parent
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
        subprocess.run([str(venv / "bin" / "pip"), "install", "-q", "pyinfra"], check=True)
    return PYINFRA


def pyinfra_inventory(spec, inv, tmp: Path) -> Path:
    """The peer's inventory for the lab of `inv` (the lab's root key and known_hosts, host keys
    checked) and the files both tools serve (tcsession's own test page and web.xml renderers)."""
    from tcsession import webapp  # noqa: PLC0415

    files = tmp / "peer-files"
    files.mkdir(exist_ok=True)
    (files / "test.jsp").write_bytes(webapp.render_test_jsp())
    (files / "web.xml").write_bytes(webapp.render_web_xml(10))
    ssh = {"ssh_user": "root", "ssh_key": str(spec.key), "ssh_known_hosts_file": str(spec.known_hosts),
           "ssh_strict_host_key_checking": "yes", "files_dir": str(files)}
    tomcats = [(t.name, {**ssh, "ssh_hostname": t.address, "address": t.address}) for t in inv.tomcats]
    nginx = [(inv.nginx.name, {**ssh, "ssh_hostname": inv.nginx.address,
                               "tomcats": [t.address for t in inv.tomcats]})]
    path = tmp / "peer_inventory.py"
    path.write_text(f"nginx = {nginx!r}\ntomcats = {tomcats!r}\n")
    return path


def pyinfra_deploy(inventory: Path, send: int) -> float:
    """One `pyinfra INVENTORY deploy.py -y` (a new process, as an operator runs it): its wall time."""
    started = time.monotonic()
    proc = subprocess.run([str(PYINFRA), str(inventory), str(PEER / "deploy.py"), "-y",
                           "--data", f"channel_send_options={send}"], cwd=PEER, capture_output=True, text=True)
    wall = time.monotonic() - started
    if proc.returncode != 0:
        raise SystemExit(f"bench: the pyinfra peer failed: {(proc.stderr or proc.stdout)[-1500:]}")
    return wall


def serves_sessions(inv) -> None:
    """A session through nginx, 6 requests, its count kept (both tools' clusters must work)."""
    from tcsession.client import SessionClient  # noqa: PLC0415

    c = SessionClient(inv.nginx.address, inv.nginx.http_port)
    for _ in range(6):
        c.request()
    if not (c.run.ok and c.run.last_count == 6):
        raise SystemExit(f"bench: no working session through {inv.nginx.address}: {c.run.to_dict()}")


def compare_pyinfra(args, tmp: Path) -> dict[str, list[float]]:
    """tcsession and the pyinfra peer (bench/peers/pyinfra) side by side, 2 Tomcats, delta, each on
    a lab of its own of the same kind, both up at once and the runs interleaved: each tool's
    deploy from fresh hosts, configuration change (channelSendOptions 6 <-> 2; tcsession with its
    default inventory: drain, state gate, log gate) and no-op, every one as the operator runs it
    (a new process: `inv deploy`, `pyinfra ... deploy.py`)."""
    pyinfra_ready()
    (tmp / "cmp").mkdir()
    base = lab.render_inventory(args.name, "bookworm", 2, args.subnet)
    inv = inventories(tmp / "cmp", base, "delta", None)
    peer_inv = load_inventory(_write(tmp / "cmp" / "peer.toml",
                                     lab.render_inventory(args.peer_name, "bookworm", 2, args.peer_subnet)))
    spec, peer_spec = lab.spec_from_inventory(load_inventory(inv["a"])), lab.spec_from_inventory(peer_inv)
    rows: dict[str, list[float]] = {k: [] for k in ("t_fresh", "p_fresh", "t_change", "p_change", "t_noop", "p_noop",
                                                    "settle")}
    try:
        for s in (spec, peer_spec):
            lab.down(s, log=lambda *_: None)
            lab.up(s, log=lambda *_: None)
        peer = pyinfra_inventory(peer_spec, peer_inv, tmp / "cmp")
        rows["t_fresh"].append(inv_cmd("deploy", "--mode=delta", "-q", "-i", str(inv["a"])))
        rows["p_fresh"].append(pyinfra_deploy(peer, 6))
        serves_sessions(load_inventory(inv["a"]))
        serves_sessions(peer_inv)
        for _ in range(args.runs):
            for there, send in (("b", 2), ("a", 6)):
                rows["t_change"].append(inv_cmd("deploy", "--mode=delta", "-q", "-i", str(inv[there])))
                rows["p_change"].append(pyinfra_deploy(peer, send))
            # the no-ops on rested labs (the changes' JVMs done compiling), for both tools alike
            rows["settle"].append(settle((spec, peer_spec)))
            for _ in range(5):  # without -q, as an operator runs it (its lines into the pipe, as pyinfra's)
                rows["t_noop"].append(inv_cmd("deploy", "--mode=delta", "-i", str(inv["a"])))
                rows["p_noop"].append(pyinfra_deploy(peer, 6))
        serves_sessions(load_inventory(inv["a"]))
        serves_sessions(peer_inv)
    finally:
        for s in (spec, peer_spec):
            lab.down(s, log=lambda *_: None)
    return rows


def _write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def print_comparison(rows: dict[str, list[float]], runs: int) -> None:
    med = {k: statistics.median(v) for k, v in rows.items()}
    print(f"\ntcsession and the pyinfra peer (bench/peers/pyinfra), delta, 2 Tomcats, two labs of the same "
          f"kind, runs interleaved; median s (changes: {2 * runs} each, no-ops: {5 * runs} each; each a new process)")
    print(f"{'what':<44}{'tcsession':>11}{'pyinfra':>10}{'ratio':>8}")
    for key, label in (("fresh", "deploy from fresh hosts"),
                       ("change", "configuration change (both Tomcats restart)"),
                       ("noop", "deploy, nothing to do")):
        t, p = med[f"t_{key}"], med[f"p_{key}"]
        print(f"{label:<44}{t:>11.2f}{p:>10.2f}{t / p:>8.2f}")
    print("  all runs: " + "; ".join(f"{k} " + " ".join(f"{x:.2f}" for x in v) for k, v in rows.items()
                                     if k != "settle"))
    print("  the no-ops ran once both labs rested (hosts under 0.1 CPU s per s), after "
          + ", ".join(f"{x:.1f}" for x in rows["settle"]) + " s of waiting")


def repo_is_standin(args) -> bool:
    return args.maven_repo is None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=1)
    ap.add_argument("--tomcats", default="2,8", help="Tomcat counts, comma-separated (one lab after the other)")
    ap.add_argument("--mode", choices=("delta", "msm"), default="delta")
    ap.add_argument("--maven-repo", help="msm: a Maven-layout directory with the jars (default: the stand-in)")
    ap.add_argument("--name", default="tcsbench", help="the lab's name")
    ap.add_argument("--subnet", default="10.153.20.0/24", help="the lab's /24 (hosts .111 and up)")
    ap.add_argument("--peer", choices=("pyinfra", "none"), default="pyinfra",
                    help="delta: also compare with the pyinfra peer at 2 Tomcats, on a second lab")
    ap.add_argument("--peer-name", help="the peer's lab (default: --name with a p)")
    ap.add_argument("--peer-subnet", default="10.153.21.0/24", help="the peer's lab's /24")
    ap.add_argument("--only-peer", action="store_true", help="only the comparison with the peer")
    args = ap.parse_args()
    # tcsession byte-compiled, as `pip install` leaves it for an operator (and as the peer's pyinfra
    # is): an editable checkout under PYTHONDONTWRITEBYTECODE would compile it in every process
    compileall.compile_dir(str(ROOT / "tcsession"), quiet=1)
    args.peer_name = args.peer_name or f"{args.name[:15]}p"
    counts = [] if args.only_peer else [int(x) for x in args.tomcats.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="tcsbench-"))
    os.environ["XDG_CACHE_HOME"] = str(tmp / "cache")
    repo = args.maven_repo
    if args.mode == "msm" and repo is None:
        sys.path.insert(0, str(ROOT / "tests"))
        import standin  # noqa: PLC0415

        repo = str(standin.write_repo(tmp / "repo", standin.standin_jars()))
    comparison = compare_pyinfra(args, tmp) if args.mode == "delta" and args.peer == "pyinfra" else None
    results = {n: measure(args, n, tmp, repo) for n in counts}
    if comparison:
        print_comparison(comparison, args.runs)
    if not counts:
        return
    labels = {"fresh": "deploy from fresh hosts", "waves": "configuration change, in waves",
              "one": "configuration change, one at a time", "noop": "deploy, nothing to do",
              "status": "inv status (10-request check)"}
    print(f"\ntcsession {args.mode} on the lab, median s (SSH commands); runs: {args.runs} "
          f"(no-op and status: {3 * args.runs}, changes: {2 * args.runs})")
    print(f"{'what':<38}" + "".join(f"{f'{n} Tomcats':>20}" for n in counts))
    for key, label in labels.items():
        cells = "".join(f"{f'{statistics.median(results[n][0][key]):.2f} ({results[n][1].get(key, 0)})':>20}"
                        for n in counts)
        print(f"{label:<38}{cells}")
    if len(counts) == 2:
        a, b = counts
        med = {n: {k: statistics.median(v) for k, v in results[n][0].items()} for n in counts}
        print(f"\n{b} Tomcats: waves / one at a time = {med[b]['waves'] / med[b]['one']:.2f}; "
              f"no-op {b}/{a} = {med[b]['noop'] / med[a]['noop']:.2f}; status {b}/{a} = "
              f"{med[b]['status'] / med[a]['status']:.2f}")
    print("one new SSH connection and `true` on every host, in parallel (median of 3): "
          + ", ".join(f"{n} Tomcats {statistics.median(results[n][0]['ssh']):.2f} s" for n in counts))
    cores = os.cpu_count() or 1
    print(f"CPU used per run, median s (this machine has {cores} cores, shared by the lab's hosts):")
    for key in ("noop", "status"):
        print(f"  {labels[key]:<36}" + "".join(
            f"  {n} Tomcats: hosts {statistics.median(results[n][0]['cpu'][key]['hosts']):.2f}, "
            f"control {statistics.median(results[n][0]['cpu'][key]['control']):.2f}" for n in counts))
    print("  hosts at rest, per second: " + ", ".join(
        f"{n} Tomcats {statistics.median(results[n][0]['cpu']['idle']):.2f}" for n in counts))
    for n in counts:
        r = results[n][0]
        if r.get("floor_one"):
            one, wave = r["floor_one"][0], r["floor_wave"][0]
            print(f"{n} Tomcats, by hand without tcsession: {n // 2} restarts one after the other {one:.1f} s, "
                  f"all at once {wave:.1f} s: ratio {wave / one:.2f} (the floor for waves on this machine)")


if __name__ == "__main__":
    main()

#!/usr/bin/env python3
"""What one Tomcat restart costs with each start option tcsession offers: prints figures, asserts
nothing (issue 24).

    .venv/bin/python bench/start_bench.py [--runs 5] [--name tcsstart] [--subnet 10.153.22.0/24]

Its own lab (2 Tomcats, delta), deployed once per setting: multicast membership (frequency 500),
static membership (the default of a new cluster), static with `[app] jar_scan = "listed"` and no
jar listed (no jar scanned for tag libraries, web fragments or initializers). For each, tomcat1 restarted by hand `--runs` times (`systemctl restart`,
then until /test.jsp answers 200: the JSP compiled, the session state received from tomcat2),
median and every run (after one warm-up restart, not counted).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tcsession import lab  # noqa: E402
from tcsession.deploy import deploy  # noqa: E402
from tcsession.inventory import load_inventory  # noqa: E402
from tcsession.remote import Remote  # noqa: E402

SETTINGS = {
    "multicast membership (frequency 500)": '[delta]\nmembership = "multicast"\n',
    "static membership (a new cluster's default)": '[delta]\nmembership = "static"\n',
    'static, [app] jar_scan = "listed", no jar listed': '[delta]\nmembership = "static"\n',
}


def restarts(inv, runs: int) -> list[float]:
    t = inv.tomcats[0]
    script = (f"systemctl restart tomcat10 && for i in $(seq 1 600); do "
              f"[ \"$(curl -s -o /dev/null -m 2 -w '%{{http_code}}' http://{t.address}:{t.http_port}/test.jsp)\" = 200 ] "
              "&& exit 0; sleep 0.05; done; exit 1")
    out = []
    with Remote(inv) as remote:
        for n in range(runs + 1):
            time.sleep(1)  # the peer settles (membership, replication)
            started = time.monotonic()
            r = remote.run(t, script)
            if not r.ok:
                raise SystemExit(f"bench: restarting {t.name} failed: {r.why()}")
            if n:  # the first restart after a deploy is a warm-up, not counted
                out.append(time.monotonic() - started)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--name", default="tcsstart")
    ap.add_argument("--subnet", default="10.153.22.0/24")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="tcsstart-"))
    base = lab.render_inventory(args.name, "bookworm", 2, args.subnet)
    paths = {}
    for i, (label, extra) in enumerate(SETTINGS.items()):
        text = base + "\n" + extra
        if "jar_scan" in label:
            text = text.replace("[app]\n", '[app]\njar_scan = "listed"\n')
        paths[label] = tmp / f"{i}.toml"
        paths[label].write_text(text)
    spec = lab.spec_from_inventory(load_inventory(paths[next(iter(SETTINGS))]))
    results = {}
    try:
        lab.down(spec, log=lambda *_: None)
        lab.up(spec, log=lambda *_: None)
        for label, path in paths.items():
            inv = load_inventory(path)
            deploy(inv, "delta", quiet=True, switch_membership=True)
            results[label] = restarts(inv, args.runs)
    finally:
        lab.down(spec, log=lambda *_: None)
    print(f"\none Tomcat 10.1 restart until /test.jsp answers 200 (2 Tomcats, delta), median of {args.runs}, s")
    for label, runs in results.items():
        print(f"{label:<50}{statistics.median(runs):>6.2f}   runs: " + " ".join(f"{x:.2f}" for x in runs))


if __name__ == "__main__":
    main()

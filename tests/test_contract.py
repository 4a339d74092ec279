"""The contract for scripts (docs/cli.md): exit codes, and JSON with a schema version, stable check
ids and hosts by name, on stdout whatever happens. Real processes against hosts that cannot be
reached (TEST-NET addresses, 1 s connect timeout); ids from checks judged on captured lab facts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_inventory import write_private_key
from tcsession import contract, status
from tcsession.errors import Interrupted, InventoryError, UnreachableError
from tcsession.facts import parse_facts
from tcsession.inventory import load_inventory
from tcsession.preflight import judge_host
from tcsession.modes import DELTA, MSM

ROOT = Path(__file__).resolve().parent.parent
DATA = Path(__file__).parent / "data" / "facts"

UNREACHABLE = """[cluster]
mode = "delta"
[ssh]
user = "root"
key = "id_test"
known_hosts = "known_hosts"
connect_timeout = 1
[nginx.web]
address = "192.0.2.10"
[tomcat.tc1]
address = "192.0.2.11"
[tomcat.tc2]
address = "192.0.2.12"
"""

COMMANDS = {"status": ["status", "--json"], "preflight": ["preflight", "--json"], "history": ["history", "--json"],
            "deploy": ["deploy", "--json", "--dry-run"], "rollback": ["rollback", "--json", "--dry-run"]}


def test_unreachable_hosts_exit_3_with_json_on_stdout_for_every_command(tmp_path):
    write_private_key(tmp_path / "id_test")
    (tmp_path / "known_hosts").write_text("")
    (tmp_path / "hosts.toml").write_text(UNREACHABLE)
    env = {k: v for k, v in os.environ.items() if k not in ("TCSESSION_INVENTORY", "TCSESSION_DEBUG")}
    procs = {c: subprocess.Popen([sys.executable, "-m", "tcsession", *args], cwd=tmp_path, env=env, text=True,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
             for c, args in COMMANDS.items()}  # at once: each waits out its 1 s connect timeout
    for command, p in procs.items():
        out, err = p.communicate(timeout=60)
        assert p.returncode == 3, (command, out, err)
        d = json.loads(out)
        assert d["schema"] == f"tcsession.{command}/1" and d["ok"] is False and d["exit"] == 3, (command, d)
        assert set(d["unreachable"]) == {"web", "tc1", "tc2"}, (command, d)
        assert all(why.startswith(f"{name} (192.0.2.") for name, why in d["unreachable"].items())
        assert err.startswith("tcsession: ") and len(err.splitlines()) == 1, (command, err)
    # status still reports each host, by name
    d = json.loads(subprocess.run([sys.executable, "-m", "tcsession", "status", "--json"], cwd=tmp_path, env=env,
                                  capture_output=True, text=True, timeout=60).stdout)
    assert [(h["name"], h["reachable"]) for h in d["hosts"]] == [("web", False), ("tc1", False), ("tc2", False)]
    assert d["healthy"] is False and d["mode_problems"] == []


def captured(prefix: str, name: str):
    return parse_facts((DATA / f"{prefix}-{name}.txt").read_text())


@pytest.mark.parametrize("prefix, mode", [("bookworm-delta", "delta"), ("msm-sticky", "msm")])
def test_every_status_check_has_a_stable_id(prefix, mode):
    inv = load_inventory(ROOT / "hosts.toml")
    hosts = [status.judge_nginx(inv, inv.nginx, captured(prefix, "nginx"), mode)]
    hosts += [status.judge_tomcat(inv, t, captured(prefix, t.name), mode) for t in inv.tomcats]
    d = contract.status_json(status.Report(tuple(hosts), mode), inv)
    ids = {h["name"]: [c["id"] for c in h["checks"]] for h in d["hosts"]}
    assert not [i for v in ids.values() for i in v if i.startswith("other.")], ids
    assert ids["nginx"][:3] == ["service.nginx", "port.http", "nginx.site"]
    expected = {"service.tomcat", "port.http", "bind.own_address"} | (
        {"port.receiver", "port.multicast", "cluster.config", "cluster.members"} if mode == "delta" else
        {"port.memcached", "service.memcached", "memcached.bind", "msm.manager", "msm.jars", "memcached.reachable",
         "msm.started"})
    assert set(ids["tomcat1"]) == expected, ids["tomcat1"]
    assert d["schema"] == "tcsession.status/1" and d["exit"] in (0, 1) and d["ok"] == (d["exit"] == 0)
    check = d["hosts"][1]["checks"][0]
    assert list(check) == ["id", "check", "ok", "detail"]


def test_every_preflight_check_has_a_stable_id():
    inv = load_inventory(ROOT / "hosts.toml")
    for mode in (DELTA, MSM):
        hosts = tuple(judge_host(inv, h, captured("bookworm-delta", h.name), mode, False,
                                 [("clock", True, "+0.001 s"), ("multicast", True, "heard")])
                      for h in inv.hosts)
        from tcsession.preflight import PreflightReport

        d = contract.preflight_json(PreflightReport(mode.name, hosts), inv)
        ids = [c["id"] for h in d["hosts"] for c in h["checks"]]
        assert not [i for i in ids if i.startswith("other.")], ids
        assert {"host.name", "clock", "ports.free", "java", "jvm_route", "firewall", "disk", "nginx.version",
                "selinux"} <= set(ids)
        assert d["schema"] == "tcsession.preflight/1"


def test_ports_and_applications_map_to_ids_whatever_their_numbers(tmp_path):
    text = (ROOT / "hosts.toml").read_text().replace("receiver_port = 4000", "receiver_port = 4100")
    path = tmp_path / "hosts.toml"
    path.write_text(text)
    inv = load_inventory(path)
    assert contract.check_id("tcp 10.153.0.112:4100", "tomcat", inv) == "port.receiver"
    assert contract.check_id("tcp 10.153.0.111:80", "nginx", inv) == "port.http"
    assert contract.check_id("app /shop", "tomcat", inv) == "app.shop"
    assert contract.check_id("tomcat9 active", "tomcat", inv) == "service.tomcat"


def test_failures_carry_their_exit_code():
    assert contract.failure_json("deploy", Interrupted("interrupted during tomcat1"))["exit"] == 130
    assert contract.failure_json("deploy", KeyboardInterrupt())["exit"] == 130
    d = contract.failure_json("check", InventoryError(["a: one", "a: two"]))
    assert (d["exit"], d["error"], d["errors"]) == (2, "a: one", ["a: one", "a: two"])
    stopped = Interrupted("interrupted during tomcat1: restart tomcat10").at(
        "20261205T213607Z-42e6c3", {"nginx": "done", "tomcat1": "interrupted during: restart tomcat10"})
    d = contract.failure_json("deploy", stopped)
    assert (d["exit"], d["deploy_id"], d["hosts"]["tomcat1"]) == (130, "20261205T213607Z-42e6c3",
                                                                  "interrupted during: restart tomcat10")
    d = contract.failure_json("status", UnreachableError("not reached", {"web": "web (x): refused"}))
    assert d["exit"] == 3 and d["unreachable"] == {"web": "web (x): refused"}


def test_the_automatic_upgrades_check_has_its_id_in_status_and_preflight():
    """On facts captured from a bookworm host with unattended-upgrades, needrestart and tcsession's
    hold files (tests/data/automatic): `packages.automatic`, passing; with the upgraders' state of
    a host without the hold, passing with `"warning": true`."""
    import dataclasses

    from tcsession import unattended
    from tcsession.preflight import PreflightReport

    inv = load_inventory(ROOT / "hosts.toml")
    held = parse_facts((DATA.parent / "automatic" / "bookworm-held-facts.txt").read_text())
    lines = (DATA.parent / "automatic" / "bookworm-exposed.txt").read_text().splitlines()[1:]
    exposed = dataclasses.replace(held, automatic=unattended.parse_upgraders(lines))
    t = inv.host("tomcat1")
    for f, warned in ((held, False), (exposed, True)):
        st = contract.status_json(status.Report((status.judge_tomcat(inv, t, f, "delta"),), "delta"), inv)
        pf = contract.preflight_json(PreflightReport("delta", (judge_host(inv, t, f, DELTA, False),)), inv)
        for d in (st, pf):
            c = next(c for c in d["hosts"][0]["checks"] if c["id"] == "packages.automatic")
            assert c["check"] == "automatic upgrades" and c["ok"] and c.get("warning", False) is warned, c

"""The operator's own directory, run as the operator would (`python -m tcsession` in a directory of
theirs, HOME theirs): `init` writes a starter that `check` accepts, with their key; `check` lists
every problem of a file at once (exit 2), prints the effective inventory, and its JSON always."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from test_inventory import write_private_key

ROOT = Path(__file__).resolve().parent.parent


def tcsession(cwd: Path, home: Path, *args: str):
    env = {k: v for k, v in os.environ.items() if k not in ("TCSESSION_INVENTORY", "TCSESSION_DEBUG")}
    env["HOME"] = str(home)
    return subprocess.run([sys.executable, "-m", "tcsession", *args], cwd=cwd, capture_output=True, text=True,
                          timeout=60, env=env, stdin=subprocess.DEVNULL)


@pytest.fixture
def operator(tmp_path):
    home, work = tmp_path / "home", tmp_path / "ops"
    (home / ".ssh").mkdir(parents=True)
    work.mkdir()
    return home, work


def test_init_writes_a_starter_with_the_operators_key_that_check_accepts(operator):
    home, work = operator
    write_private_key(home / ".ssh" / "id_ecdsa")  # not ed25519: the first of OpenSSH's names present
    (home / ".ssh" / "known_hosts").write_text("")
    p = tcsession(work, home, "init")
    assert p.returncode == 0 and p.stdout == (f"wrote {work / 'hosts.toml'}: set the addresses and the SSH user, then "
                                              "`tcsession check`\n"), p.stderr
    text = (work / "hosts.toml").read_text()
    assert 'key = "~/.ssh/id_ecdsa"' in text and 'known_hosts = "~/.ssh/known_hosts"\n' in text
    assert "$" not in text and '[cluster]\nmode = "delta"' in text
    c = tcsession(work, home, "check")
    assert c.returncode == 0 and c.stderr == "", c.stderr
    out = c.stdout
    assert out.startswith('# hosts.toml: valid. The effective inventory (every key; "# default": not in the file):')
    assert f'key = "{home}/.ssh/id_ecdsa"' in out and "# from [ssh]" in out
    assert 'mode = "delta"\n' in out and f'#   msm lock: {work}/hosts.msm.lock: absent' in out
    # init never overwrites
    (work / "hosts.toml").write_text("# mine\n")
    again = tcsession(work, home, "init")
    assert again.returncode == 2 and again.stderr.startswith(f"tcsession: {work / 'hosts.toml'} exists; tcsession "
                                                             "init never overwrites an inventory")
    assert (work / "hosts.toml").read_text() == "# mine\n"


def test_init_without_a_key_uses_the_agent(operator):
    home, work = operator
    assert tcsession(work, home, "init").returncode == 0
    text = (work / "hosts.toml").read_text()
    assert "agent = true" in text and "key =" not in text.split("[nginx.nginx]")[0].replace('or key = "~/.ssh/NAME"', "")
    assert "absent now: add each server's host key" in text
    assert tcsession(work, home, "check").returncode == 0


BAD = """[cluster]
mode = "mesh"
[ssh]
user = "ops"
agent = true
[nginx.nginx]
address = "lb.example.com"
[tomcat.tomcat1]
address = "192.0.2.11"
http_port = 0
[tomcat.tomcat2]
address = "192.0.2.11"
[msm]
serializer = "xml"
"""


def test_check_lists_every_problem_at_once_and_exits_2(operator):
    home, work = operator
    (work / "site.toml").write_text(BAD)
    p = tcsession(work, home, "check", "-i", "site.toml")
    assert p.returncode == 2 and p.stdout == ""
    lines = p.stderr.splitlines()
    assert lines[0] == "site.toml: 5 problems"
    assert [l.split(": ", 2)[2].split(" ", 2)[:2] for l in lines[1:]] == [
        ["[cluster]", "mode"], ["[nginx.nginx]", "address"], ["[tomcat.tomcat1]", "http_port"],
        ["[tomcat.tomcat2]", "address"], ["[msm]", "serializer"]]
    assert all(l.startswith("tcsession: site.toml: ") and ";" in l for l in lines[1:])
    j = tcsession(work, home, "check", "-i", "site.toml", "--json")
    assert j.returncode == 2
    d = json.loads(j.stdout)
    assert d["schema"] == "tcsession.check/1" and d["ok"] is False and d["exit"] == 2 and d["inventory"] == "site.toml"
    assert d["errors"] == [l[len("tcsession: "):] for l in lines[1:]]


def test_check_json_of_a_valid_inventory_and_the_schema(operator):
    home, work = operator
    (work / "lab.toml").write_text((ROOT / "hosts.toml").read_text())
    env_run = tcsession(work, home, "check", "--json", "-i", "lab.toml")
    d = json.loads(env_run.stdout)
    assert env_run.returncode == 0 and d["ok"] and d["errors"] == []
    assert d["effective"]["tomcat.tomcat1"]["jvm_route"] == "tomcat1" and d["effective"]["lab"]["name"] == "tcsession"
    assert d["effective"]["cluster"] == {} and d["files"]["msm lock"].startswith(f"{work}/lab.msm.lock: absent")
    none = tcsession(work, home, "check", "--json")  # no inventory here: still JSON, exit 2
    d = json.loads(none.stdout)
    assert none.returncode == 2 and (d["schema"], d["ok"], d["exit"]) == ("tcsession.check/1", False, 2)
    assert d["error"].startswith("no inventory: no -i PATH given")
    s = tcsession(work, home, "check", "--schema")
    assert s.returncode == 0 and json.loads(s.stdout)["$id"] == "tcsession.inventory/1"
    assert s.stdout == (ROOT / "tcsession" / "inventory.schema.json").read_text()


def test_init_lab_writes_the_lab_inventory_shipped_in_the_package(operator):
    """The package carries the lab's inventory: the checkout's hosts.toml, byte for byte."""
    assert (ROOT / "tcsession" / "templates" / "lab.toml").read_bytes() == (ROOT / "hosts.toml").read_bytes()
    home, work = operator
    p = tcsession(work, home, "init", "--lab")
    assert p.returncode == 0 and p.stdout.endswith("the built-in lab; then `tcsession lab.up` (as root)\n")
    assert (work / "hosts.toml").read_bytes() == (ROOT / "hosts.toml").read_bytes()

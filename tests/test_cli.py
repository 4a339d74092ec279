"""The `tcsession` command (tcsession/cli.py), run for real as `python -m tcsession`: its own
core flags, Invoke's that pretend refused, one line and exit code 2 for any usage mistake."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def tcsession(*args: str):
    return subprocess.run([sys.executable, "-m", "tcsession", *args], cwd=ROOT, capture_output=True, text=True,
                          timeout=60)


def test_version_and_help_show_only_what_tcsession_accepts():
    v = tcsession("--version")
    assert v.returncode == 0 and v.stdout.startswith("tcsession ")
    h = tcsession("--help")
    assert h.returncode == 0
    for pretend in ("--dry", "--echo", "--pty", "--warn-only", "--prompt-for-sudo-password", "--command-timeout",
                    "--collection", "--search-root"):
        assert pretend not in h.stdout
    for command in ("deploy", "rollback", "status", "preflight", "history", "upgrade", "lab.up"):
        assert command in h.stdout


@pytest.mark.parametrize("args, message", [
    (("--dry", "deploy", "--mode=delta"), "tcsession: unknown option -R/--dry (an option of Invoke's that tcsession "
                                          "does not use); tcsession's own options are -h/--help, -V/--version and "
                                          "-l/--list; `tcsession deploy --dry-run` previews a deploy"),
    (("-R", "deploy", "--mode=delta"), "tcsession: unknown option -R/--dry"),
    (("-e", "status"), "tcsession: unknown option -e/--echo"),
    (("status", "-d"), "tcsession: unknown option -d/--debug"),
    (("--nope",), "tcsession: unknown option --nope; tcsession's own options are -h/--help"),
    (("nosuch",), "tcsession: unknown command 'nosuch'; the commands: check, deploy, history, init, lab.down, "
                  "lab.status, lab.up, preflight, rollback, status, upgrade"),
    (("deploy", "--mode=msm", "--bogus"), "tcsession: unknown option --bogus for deploy; `tcsession deploy --help` "
                                          "lists its options"),
    (("upgrade", "--only=tomcat,jdk"), "tcsession: --only jdk: not a group of the cluster's packages; use a "
                                       "comma-separated list of java, memcached, nginx, tomcat"),
    (("upgrade", "--to=tomcat10"), "tcsession: --to 'tomcat10': expected NAME=VERSION"),
    (("deploy",), 'tcsession: deploy needs a mode: set [cluster] mode = "delta" (or "msm") in hosts.toml, or give '
                  "--mode=delta or --mode=msm"),
])
def test_a_usage_mistake_is_one_line_and_exit_2_and_runs_nothing(args, message):
    p = tcsession(*args)
    assert p.returncode == 2, (p.returncode, p.stdout, p.stderr)
    assert p.stderr.startswith(message) and p.stderr.count("\n") == 1, p.stderr
    assert p.stdout == ""


def test_inv_in_the_checkout_runs_the_same_tasks():
    p = subprocess.run([sys.executable, "-m", "invoke", "--list"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "deploy" in p.stdout and "lab.up" in p.stdout


def test_the_inventory_comes_from_i_then_the_environment_then_hosts_toml(tmp_path):
    """-i PATH, else $TCSESSION_INVENTORY, else ./hosts.toml; none of them: exit 2 naming all three.
    (Broken files, so that the run stops at reading them: which one it read is in the message.)"""
    def run(*args, env_inventory=None):
        env = {k: v for k, v in os.environ.items() if k != "TCSESSION_INVENTORY"}
        if env_inventory:
            env["TCSESSION_INVENTORY"] = str(env_inventory)
        return subprocess.run([sys.executable, "-m", "tcsession", *args], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60, env=env, stdin=subprocess.DEVNULL)

    p = run("status")
    assert p.returncode == 2 and p.stderr == (
        "tcsession: no inventory: no -i PATH given, TCSESSION_INVENTORY is not set and there is no hosts.toml in "
        f"{tmp_path}; write one here with `tcsession init`, or give -i PATH\n")
    for name in ("hosts.toml", "env.toml", "given.toml"):
        (tmp_path / name).write_text(f"[{name.split('.')[0]}x]\n")
    p = run("status")
    assert p.returncode == 2 and p.stderr.startswith('tcsession: hosts.toml: unknown table or key "hostsx"'), p.stderr
    p = run("status", env_inventory=tmp_path / "env.toml")
    assert p.returncode == 2 and p.stderr.startswith(f'tcsession: {tmp_path / "env.toml"}: unknown table or key "envx"')
    p = run("status", "-i", "given.toml", env_inventory=tmp_path / "env.toml")
    assert p.returncode == 2 and p.stderr.startswith('tcsession: given.toml: unknown table or key "givenx"')
    # -i before the command (tcsession -i FILE status) comes before the environment; a command's own -i first
    p = run("-i", "given.toml", "status", env_inventory=tmp_path / "env.toml")
    assert p.returncode == 2 and p.stderr.startswith('tcsession: given.toml: unknown table or key "givenx"')
    p = run("-i", "given.toml", "status", "-i", "hosts.toml")
    assert p.returncode == 2 and p.stderr.startswith('tcsession: hosts.toml: unknown table or key "hostsx"')

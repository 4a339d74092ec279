"""tcsession's command line: thin Invoke tasks over the tcsession package.

`inv --list` shows them; `inv --help TASK` shows a task's options. Every task reads the
inventory (-i/--inventory, else $TCSESSION_INVENTORY, else ./hosts.toml) and ends an expected
failure with one line per problem and the exit code of tcsession's contract (docs/cli.md: 1
failed, 2 usage or inventory, 3 unreachable, 130 interrupted); with --json, its JSON on stdout.
"""

from __future__ import annotations

import atexit
import contextlib
import functools
import gc
import sys

from invoke import Collection, Exit, task

DEFAULT_INVENTORY = None  # -i/--inventory, else $TCSESSION_INVENTORY, else ./hosts.toml (inventory_path)
INVENTORY_HELP = "inventory file (default: $TCSESSION_INVENTORY, else hosts.toml in this directory)"


DEBUG_ENV = "TCSESSION_DEBUG"  # set to 1 to see the traceback of an unexpected error

# A command's objects are left for the process's end to free: Python's last garbage collections at
# exit, over every object the command made (about 40,000 after a no-op deploy), took 25 to 30 ms
# of each command (of a no-op deploy's 0.36 s; measured on the lab). Frozen at exit, they are not
# looked at; atexit handlers and threads' joins run as before (tcsession closes its files itself).
atexit.register(gc.freeze)


def _fail_cleanly(fn):
    """No traceback reaches the operator: an expected failure (TcsessionError) ends the task
    with its one line; Ctrl-C with one line; anything else (a bug in tcsession) with one line
    saying so, the traceback only with TCSESSION_DEBUG=1."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        import os

        from tcsession.errors import TcsessionError

        import signal

        from tcsession.text import printable

        def on_term(signum, frame):  # SIGTERM stops a run like Ctrl-C: cleanly, recorded
            raise KeyboardInterrupt

        previous = signal.signal(signal.SIGTERM, on_term)
        try:
            return fn(*args, **kwargs)
        except TcsessionError as e:  # one line per problem (an inventory's are all listed)
            if e.brief:  # a deploy or rollback whose progress showed the failure: only what to do
                from tcsession.ui import print_stopped

                print_stopped(f"tcsession: {e.brief}")
                raise Exit(code=e.code) from None
            lines = str(e).splitlines() or [type(e).__name__]
            text = "\n".join(printable(f"tcsession: {line}") for line in lines)
            if sys.stderr.isatty():  # on a terminal, each line wrapped under its text, never cut
                from tcsession.ui import print_stopped

                print_stopped(text)
                raise Exit(code=e.code) from None
            raise Exit(text, code=e.code) from None
        except (Exit, SystemExit):
            raise
        except KeyboardInterrupt:
            raise Exit(f"tcsession: {fn.__name__.replace('_', '.')}: interrupted", code=130) from None
        except Exception as e:
            if os.environ.get(DEBUG_ENV):
                raise
            detail = " ".join(str(e).split())[:300]
            raise Exit(f"tcsession: internal error in {fn.__name__.replace('_', '.')}: {type(e).__name__}"
                       f"{': ' + detail if detail else ''} -- this is a bug in tcsession; run again with "
                       f"{DEBUG_ENV}=1 for the traceback and report it", code=1) from None

        finally:
            signal.signal(signal.SIGTERM, previous)

    return wrapper


def _int_option(name: str, value, default: int, low: int, high: int) -> int:
    """A task's integer option, checked by the task: one line naming the option and the range."""
    from tcsession.errors import UsageError as TcsessionError

    if value is None:
        return default
    text = str(value).strip()
    if not text.lstrip("+").isdigit() or not low <= int(text) <= high:
        raise TcsessionError(f"--{name}={value}: not a whole number from {low} to {high}; "
                             f"e.g. --{name}={default}")
    return int(text)


def _choice_option(name: str, value, choices: tuple[str, ...]):
    from tcsession.errors import UsageError as TcsessionError

    if value is not None and value not in choices:
        raise TcsessionError(f"--{name}={value}: not one of {', '.join(choices)}; e.g. --{name}={choices[0]}")
    return value


def inventory_path(given: str | None) -> str:
    from tcsession.workdir import inventory_path as find

    return find(given)


@contextlib.contextmanager
def _json_failures(command: str, as_json: bool):
    """With --json, a command that stops still prints its JSON on stdout (tcsession.contract:
    the exit code, the message, the unreachable hosts); the message goes to stderr as always."""
    try:
        yield
    except (KeyboardInterrupt, Exception) as e:
        from tcsession.errors import TcsessionError

        if as_json and isinstance(e, (TcsessionError, KeyboardInterrupt)):
            import json as jsonlib

            from tcsession import contract

            print(jsonlib.dumps(contract.failure_json(command, e), indent=2), flush=True)
        raise


def _print_json(d: dict) -> None:
    import json as jsonlib

    print(jsonlib.dumps(d, indent=2))


def _inventory(path: str | None):
    from tcsession.inventory import load_inventory

    return load_inventory(inventory_path(path))


# ------------------------------------------------------------------------- lab


def _lab_spec(inventory: str, tomcats: int | None, release: str | None):
    from pathlib import Path

    from tcsession import lab
    from tcsession.inventory import lab_state_dir, parse_inventory

    if tomcats is None and release is None:
        inv = _inventory(inventory)
        return lab.spec_from_inventory(inv), inv
    base = _inventory(inventory)
    name = base.lab.name if base.lab else "tcsession"
    text = lab.render_inventory(name=name, release=release or (base.lab.release if base.lab else "bookworm"),
                                tomcats=tomcats or len(base.tomcats))
    path = lab_state_dir(name).with_name(f"{name}.hosts.toml")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    print(f"lab: inventory for this lab written to {path} (use -i {path})")
    inv = parse_inventory(text, Path(path))
    return lab.spec_from_inventory(inv), inv


@task(help={"inventory": INVENTORY_HELP,
            "tomcats": "number of Tomcat hosts (default: as in the inventory; writes a lab inventory)",
            "release": "bookworm (Tomcat 10.1, default) or bullseye (Tomcat 9)",
            "older": "install the release's older Tomcat, JRE, memcached and nginx (bookworm), for `upgrade` to have "
                     "something to do"})
@_fail_cleanly
def lab_up(c, inventory=DEFAULT_INVENTORY, tomcats=None, release=None, older=False):
    """Bring up the built-in lab: real hosts (systemd containers) on a bridge, SSH-ready."""
    from tcsession import lab

    count = _int_option("tomcats", tomcats, 3, 2, 100) if tomcats is not None else None
    spec, inv = _lab_spec(inventory, count, _choice_option("release", release, ("bookworm", "bullseye")))
    lab.up(spec)
    if older:
        lab.install_older(inv)


@task(help={"inventory": INVENTORY_HELP})
@_fail_cleanly
def lab_down(c, inventory=DEFAULT_INVENTORY):
    """Take the lab down: no container, mount, bridge, veth or state left behind."""
    from tcsession import lab

    lab.down(lab.spec_from_inventory(_inventory(inventory)))


@task(help={"inventory": INVENTORY_HELP, "json": "print JSON instead of a table"})
@_fail_cleanly
def lab_status(c, inventory=DEFAULT_INVENTORY, json=False):
    """Show each lab host: container running, reachable over SSH, OS release, systemd state."""
    from tcsession import contract, status, ui

    with _json_failures("lab.status", json):
        inv = _inventory(inventory)
        report = status.host_report(inv)
    if json:
        _print_json(contract.status_json(report, inv, command="lab.status"))
    else:
        ui.print_status(report)
    code = contract.status_exit(report)
    if code:
        raise Exit(code=code)


# ------------------------------------------------------------------------- main tasks


@task(help={"inventory": INVENTORY_HELP, "json": "print JSON for monitoring",
            "requests": "requests in the end-to-end session check through nginx (default 10; 0: skip it)",
            "graph": "then a picture of the cluster: nginx, each Tomcat and its state, the sessions' path"})
@_fail_cleanly
def status(c, inventory=DEFAULT_INVENTORY, json=False, requests=None, graph=False):
    """Show hosts, services, ports, cluster membership, and a session through nginx. Exit 1 if unhealthy."""
    from tcsession import status as st
    from tcsession import ui

    from tcsession import contract

    with _json_failures("status", json):
        count = _int_option("requests", requests, 10, 0, 10000)
        inv = _inventory(inventory)
        what = f"status of {len(inv.hosts)} hosts" + (f", then {count} requests through nginx" if count else "")
        report = st.cluster_report(inv, session_requests=count,  # the spinner once any prompt is answered
                                   busy=lambda: ui.waiting(what, ui.status_console(json)))
    if json:
        _print_json(contract.status_json(report, inv))
    else:
        ui.print_status(report, graph=graph)
    code = contract.status_exit(report)
    if code == 3:
        unreached = "; ".join(h.error or h.name for h in report.hosts if not h.reachable)
        raise Exit(f"tcsession: status: not reached: {unreached}", code=3)
    if code:
        raise Exit(code=code)


@task(help={"mode": "delta or msm: the checks that mode needs (default: the inventory's [cluster] mode, else delta)",
            "inventory": INVENTORY_HELP, "json": "print JSON"})
@_fail_cleanly
def preflight(c, mode=None, inventory=DEFAULT_INVENTORY, json=False):
    """Check, changing nothing, what breaks clusters most (names, clocks, multicast, ports, Java). Exit 1 on a failure."""
    _choice_option("mode", mode, ("delta", "msm"))
    from tcsession import preflight as pf
    from tcsession import ui

    from tcsession import contract

    with _json_failures("preflight", json):
        inv = _inventory(inventory)
        report = pf.preflight(inv, mode or inv.mode or "delta", busy=lambda: ui.waiting(
            f"preflight of {len(inv.hosts)} hosts", ui.status_console(json)))
    if json:
        _print_json(contract.preflight_json(report, inv))
    else:
        ui.print_preflight(report)
    if not report.ok:
        raise Exit(code=1)


@task(help={"mode": "delta (Tomcat's own cluster) or msm (memcached-session-manager); default: the inventory's "
                    "[cluster] mode", "inventory": INVENTORY_HELP,
            "dry_run": "show what would change (diffs, packages, restarts) and change nothing",
            "quiet": "print nothing but errors",
            "switch_mode": "allow a deploy that switches the cluster's mode (the other mode's configuration is removed)",
            "switch_membership": "allow a deploy that switches a running cluster's membership kind ([delta] "
                                 "membership: three rolling passes through two bridges, each node sees its peers throughout)",
            "json": "print JSON on stdout (the deploy id, the steps; failures too); progress goes to stderr"})
@_fail_cleanly
def deploy(c, mode=None, inventory=DEFAULT_INVENTORY, dry_run=False, quiet=False, switch_mode=False,
           switch_membership=False, json=False):
    """Deploy the session cluster: install, patch, start one Tomcat at a time, check ports."""
    from tcsession.modes import choose
    from tcsession.session import open_session

    with _json_failures("deploy", json):
        _choice_option("mode", mode, ("delta", "msm"))
        inv = _inventory(inventory)
        chosen = choose(inv, mode, switch_mode)
        with open_session(inv, quiet, stderr=json) as session:
            # imported once the connections are open, while each host's sshd sets up the login
            # session (tcsession.remote.Remote.connect_all): 40 ms of every deploy
            from tcsession.deploy import run_deploy

            report = run_deploy(session, chosen, dry_run=dry_run, switch=switch_mode,
                                switch_membership=switch_membership)
    if json:
        from tcsession import contract

        _print_json(contract.deploy_json(report))


@task(help={"inventory": INVENTORY_HELP,
            "dry_run": "list, per host, each package from -> to and the restarts; change nothing",
            "only": "the groups to upgrade, comma-separated: tomcat, java, memcached, nginx (default: all)",
            "security": "every pending security update of the hosts too (installed inside each host's drained restart)",
            "to": "exact versions instead of the newest, comma-separated NAME=VERSION (a Tomcat major change is refused)",
            "quiet": "print nothing but errors",
            "json": "print JSON on stdout (the upgrade id, the steps; failures too); progress goes to stderr"})
@_fail_cleanly
def upgrade(c, inventory=DEFAULT_INVENTORY, dry_run=False, only=None, security=False, to=None, quiet=False,
            json=False):
    """Upgrade the cluster's packages host by host: drained waves, the deploy's gates, nginx last."""
    from tcsession import contract
    from tcsession import upgrade as up
    from tcsession.ui import Progress

    plans: list = []
    with _json_failures("upgrade", json):
        run_id = up.upgrade(_inventory(inventory), dry_run=dry_run, only=only, security=security, to=to, quiet=quiet,
                            ui=Progress(quiet, stderr=json), plans=plans)
    if json:
        _print_json(contract.upgrade_json(run_id, plans, dry_run))


@task(help={"inventory": INVENTORY_HELP, "json": "print JSON"})
@_fail_cleanly
def history(c, inventory=DEFAULT_INVENTORY, json=False):
    """List the deploys recorded on the hosts (id, mode, time, hosts, files, applied or rolled back)."""
    from tcsession import rollback as rb
    from tcsession import ui

    from tcsession import contract

    with _json_failures("history", json):
        inv = _inventory(inventory)
        hist, notes = rb.history_with_notes(inv, busy=lambda: ui.waiting(
            f"reading the history of {len(inv.hosts)} hosts", ui.status_console(json)))
    if json:
        _print_json(contract.history_json(hist, notes))
    else:
        ui.print_history(hist, notes)


@task(help={"inventory": INVENTORY_HELP,
            "to": "roll back every deploy after this id (default: only the latest)",
            "force": "restore even files someone changed after the deploy (their bytes are kept)",
            "dry_run": "show every step the rollback would take (with diffs) and change nothing",
            "quiet": "print nothing but errors",
            "json": "print JSON on stdout (the deploys undone, the steps; failures too); progress goes to stderr"})
@_fail_cleanly
def rollback(c, inventory=DEFAULT_INVENTORY, to=None, force=False, dry_run=False, quiet=False, json=False):
    """Undo the latest deploy on every host: files byte for byte, services as they were."""
    import re

    from tcsession import contract
    from tcsession import rollback as rb
    from tcsession.errors import UsageError as TcsessionError
    from tcsession.ui import Progress
    import os

    from tcsession.workdir import INVENTORY_ENV, command

    plans: list = []
    with _json_failures("rollback", json):
        if to is not None and not re.fullmatch(r"[0-9A-Za-z][0-9A-Za-z._-]{0,63}", str(to)):
            raise TcsessionError(f"--to={to!r}: not a deploy id (like 20261201T105219Z-1a2b3c); "
                                 f"`{command(inventory or os.environ.get(INVENTORY_ENV), 'history')}` lists the ids")
        ids = rb.rollback(_inventory(inventory), to=to, force=force, quiet=quiet, dry_run=dry_run, plans=plans,
                          ui=Progress(quiet, stderr=json))
    if json:
        _print_json(contract.rollback_json(ids, plans, dry_run))


# ------------------------------------------------------------------------- the operator's directory


@task(help={"inventory": INVENTORY_HELP, "json": "print JSON (always, problems included)",
            "schema": "print the inventory's JSON Schema (for editors) and nothing else"})
@_fail_cleanly
def check(c, inventory=DEFAULT_INVENTORY, json=False, schema=False):
    """Check the inventory offline: every problem at once (exit 2), or the effective inventory with its defaults."""
    import json as jsonlib
    from importlib import resources

    from tcsession import workdir

    if schema:
        sys.stdout.write(resources.files("tcsession").joinpath("inventory.schema.json").read_text())
        return
    with _json_failures("check", json):
        report = workdir.check(inventory_path(inventory))
    if json:
        print(jsonlib.dumps(report.to_dict(), indent=2))
    elif report.ok:
        sys.stdout.write(workdir.render_check(report))
    else:
        sys.stderr.write(workdir.render_check(report))
    if not report.ok:
        raise Exit(code=2)


@task(help={"lab": "write the built-in lab's inventory instead (containers on this machine: tcsession lab.up)"})
@_fail_cleanly
def init(c, lab=False):
    """Write a commented starter inventory for real servers, hosts.toml, here (never over an existing one)."""
    from pathlib import Path

    from tcsession import workdir

    path = workdir.init(Path.cwd(), Path.home(), lab=lab)
    print(f"wrote {path}: " + ("the built-in lab; then `tcsession lab.up` (as root)" if lab else
                               "set the addresses and the SSH user, then `tcsession check`"))


lab = Collection("lab")
lab.add_task(lab_up, "up")
lab.add_task(lab_down, "down")
lab.add_task(lab_status, "status")

ns = Collection()
ns.add_collection(lab)
ns.add_task(status)
ns.add_task(preflight)
ns.add_task(deploy)
ns.add_task(history)
ns.add_task(rollback)
ns.add_task(upgrade)
ns.add_task(check)
ns.add_task(init)

if sys.version_info < (3, 11):  # pragma: no cover
    raise SystemExit("tcsession needs Python 3.11 or newer")

"""A session: everything a command needs from the world, built in one place.

`open_session(inv)` checks the lab (when the inventory describes it), opens the connections
(`tcsession.remote.Remote`: the sudo password asked once, keys and known_hosts read before any
connection) and makes the UI; every command (deploy, rollback, status, preflight, history) takes
the session instead of building its own, so one command opens one set of connections. Unit tests
build a Session by hand with a strict fake remote, a recording UI, a fixed clock and fixed ids.
"""

from __future__ import annotations

import contextlib
import dataclasses
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from tcsession.inventory import Inventory


def new_deploy_id() -> str:
    return time.strftime("%Y%m%dT%H%M%SZ", time.gmtime()) + "-" + uuid.uuid4().hex[:6]


def utc_stamp() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


@dataclasses.dataclass
class Session:
    inv: Inventory
    remote: Any  # run(host, script) -> Result, run_all(hosts, script_for_host) -> {name: Result}, .commands
    ui: Any  # tcsession.ui.Progress or anything with its methods (line, say, event, diff, plan)
    clock: Callable[[], float] = time.monotonic  # for durations
    stamp: Callable[[], str] = utc_stamp  # the time recorded with a deploy
    new_id: Callable[[], str] = new_deploy_id  # a deploy's id


@contextlib.contextmanager
def open_session(inv: Inventory, quiet: bool = False, ui: Any = None, stderr: bool = False) -> Iterator[Session]:
    """The real world: the lab checked, every host's connection opened in parallel (tcsession.
    remote.Remote.connect_all: the caller's next work then fills the time each host's sshd takes to
    set up the login session) and closed at the end. `ui`, else a tcsession.ui.Progress(quiet,
    stderr)."""
    from tcsession import lab
    from tcsession.remote import Remote

    lab.check_up(inv)
    with Remote(inv) as remote:
        remote.connect_all()  # every command here reads every host first
        from tcsession.ui import Progress

        yield Session(inv, remote, ui if ui is not None else Progress(quiet, stderr=stderr))

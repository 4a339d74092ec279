"""The exception types for expected failures: the task prints the message and exits with the
error's `code` (tcsession's exit codes, docs/cli.md: 1 failed, 2 usage or inventory, 3 hosts
unreachable)."""

from __future__ import annotations

#: tcsession's exit codes (docs/cli.md): what a script can rely on.
OK, FAILED, USAGE, UNREACHABLE, INTERRUPTED = 0, 1, 2, 3, 130


class TcsessionError(Exception):
    """An expected failure, told to the operator as one line (file/host/key, what, what to do)."""

    code = FAILED
    run_id: str | None = None  # a deploy or rollback that stopped: its id (for --json)
    where: dict[str, str] | None = None  # ... and where each host stands ("done", "failed: ...")
    brief: str | None = None  # what the operator is told when the progress already showed the rest

    def at(self, run_id: str, where: dict[str, str]) -> "TcsessionError":
        """This error, for a deploy or rollback `run_id` that stopped with its hosts `where`."""
        self.run_id, self.where = run_id, dict(where)
        return self


class UsageError(TcsessionError):
    """A command line tcsession cannot run (a bad option value, no inventory file): exit 2."""

    code = USAGE


class InventoryError(UsageError):
    """Every problem of one inventory file, one line each (table, key, fix): exit 2."""

    def __init__(self, errors: list[str] | tuple[str, ...]):
        self.errors = tuple(errors)
        super().__init__("\n".join(self.errors))


class UnreachableError(TcsessionError):
    """Hosts that could not be reached over SSH (nothing was judged or changed on them): exit 3.
    `hosts`: name -> why (one line each)."""

    code = UNREACHABLE

    def __init__(self, message: str, hosts: dict[str, str]):
        self.hosts = dict(hosts)
        super().__init__(message)


class Interrupted(TcsessionError):
    """A run stopped by Ctrl-C or SIGTERM after the step under way (where each host is, said): 130."""

    code = INTERRUPTED

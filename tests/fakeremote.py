"""A TEST DOUBLE for tcsession.remote.Remote: a strict fake that knows the commands it expects.

It stands in for SSH only in the orchestration unit tests (order of steps, prior bytes saved
before writes, a stop at the first failure, the dry run equal to the run); every claim about
real hosts is made by the lab tests. Like Invoke's MockContext, any command it was not told to
expect fails the test at once, and `assert_done()` fails on an expectation never used.

An expectation is (host, a piece of text the command must contain, the command's output, ok?).
A batched script (several steps in `@@step N` frames) uses one expectation per step.
"""

from __future__ import annotations

import dataclasses
import re

from tcsession.remote import Result

_FRAME = re.compile(r"^echo '@@step (\d+)'\n\(\n(.*?)\n\) 2>&1 \|\| \{ rc=\$\?; echo '@@failed \1'; exit \$rc; \}$",
                    re.S | re.M)


@dataclasses.dataclass
class Expect:
    host: str
    contains: str
    output: str = ""
    ok: bool = True


class FakeRemote:
    def __init__(self, expect: list[Expect]):
        self.expect = list(expect)
        self.log: list[tuple[str, str]] = []  # (host, command or step body) in the order run
        self.commands = 0

    def _next(self, host: str, body: str) -> Expect:
        if not self.expect:
            raise AssertionError(f"unexpected command on {host} (none left): {body[:300]!r}")
        e = self.expect.pop(0)
        if e.host != host or e.contains not in body:
            raise AssertionError(f"unexpected command on {host}: wanted {e.contains!r} on {e.host}, got {body[:300]!r}")
        self.log.append((host, body))
        return e

    def run(self, host, command: str, stdin: str | None = None, timeout: float | None = None) -> Result:
        self.commands += 1
        frames = _FRAME.findall(command)
        if not frames:
            e = self._next(host.name, command)
            return Result(host.name, command, 0 if e.ok else 1, e.output)
        out = []
        for index, body in frames:
            e = self._next(host.name, body)
            out.append(f"@@step {index}\n{e.output}")
            if not e.ok:
                out.append(f"@@failed {index}")
                return Result(host.name, command, 1, "\n".join(out) + "\n")
        return Result(host.name, command, 0, "\n".join(out) + "\n")

    def run_all(self, hosts, command, stdin: str | None = None) -> dict[str, Result]:
        return {h.name: self.run(h, command(h) if callable(command) else command, stdin) for h in hosts}

    def assert_done(self) -> None:
        assert not self.expect, f"expected but never run: {[(e.host, e.contains) for e in self.expect]}"

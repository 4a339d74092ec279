"""The one interpreter: applies any Plan (a deploy's or a rollback's) through a small remote
interface, and nothing but its steps.

- Consecutive steps of one host go to it as one script (one SSH round trip); a run of
  consecutive `parallel` steps goes to every host at once, each host's share as one script.
- It stops at the first failure and returns per-host outcomes: done, not started, or failed with
  the step and its error (a step's own output: the service's last log lines included).
- Events (`started`, `done`, `failed`) go to a callback: the UI prints them, tests collect them.

The remote interface is two methods, `run(host, script) -> Result` and
`run_all(hosts, script_for_host) -> {name: Result}` (tcsession.remote.Remote; tests use a strict fake).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable

from tcsession import shell
from tcsession.steps import Plan, Replan, RestartTomcat, RestoreFiles, Step, WriteFiles, log_tail, summarize


@dataclasses.dataclass(frozen=True)
class Event:
    kind: str  # "started" | "done" | "failed"
    step: Step
    text: str = ""
    seconds: float = 0.0


@dataclasses.dataclass
class Outcome:
    """What applying a plan did: the steps done (in order), and per host where it stands."""

    hosts: dict[str, str]  # host -> "done" | "not started" | "in progress" | "failed: ..."
    done: list[Step] = dataclasses.field(default_factory=list)
    failed: Step | None = None
    error: str | None = None
    stopped_at: Step | None = None  # a Replan reached: the caller plans the rest
    interrupted: bool = False  # stopped by Ctrl-C or SIGTERM
    seconds: dict[str, float] = dataclasses.field(default_factory=dict)  # host -> time its steps took

    @property
    def ok(self) -> bool:
        return self.error is None

    def summary(self) -> str:
        return "; ".join(f"{h}: {s}" for h, s in self.hosts.items())


def _wave(s: Step) -> int:
    return getattr(s, "wave", 0) if isinstance(s, (RestartTomcat, WriteFiles, RestoreFiles)) else 0


def _same_wave(last: list[Step], s: Step) -> bool:
    """A wave: its restarts (and the files each writes first, out of service), consecutive."""
    return _wave(s) > 0 and all(_wave(x) == _wave(s) for x in last) and (
        isinstance(s, RestartTomcat) or s.host not in {x.host for x in last})


def _units(steps: tuple[Step, ...]) -> list[list[Step]]:
    """Steps in execution units: a run of parallel steps, consecutive steps of one host, or the
    restarts of one wave."""
    units: list[list[Step]] = []
    for s in steps:
        last = units[-1] if units else None
        if last and (_wave(s) or any(_wave(x) for x in last)):  # a wave joins only its own unit
            if _same_wave(last, s):
                last.append(s)
            else:
                units.append([s])
        elif last and s.parallel and all(x.parallel for x in last):
            last.append(s)
        elif (last and not s.parallel and not any(x.parallel for x in last) and last[-1].host == s.host
              and not isinstance(s, RestartTomcat) and not isinstance(last[-1], RestartTomcat)):
            last.append(s)
        else:
            units.append([s])
    return units


def batch_script(steps: list[Step]) -> str:
    return "".join(shell.step_frame(i, s.script()) for i, s in enumerate(steps))


def split_output(stdout: str, count: int) -> list[str]:
    """A batched script's output, by step: the lines between its `@@step N` frame and the next
    frame (a step's own `@@section` lines stay in its share)."""
    out: list[list[str]] = [[] for _ in range(count)]
    current = None
    for line in stdout.splitlines():
        if line.startswith("@@step ") and line[7:].isdigit() and int(line[7:]) < count:
            current = int(line[7:])
        elif line.startswith("@@failed ") and line[9:].isdigit():
            current = None
        elif current is not None:
            out[current].append(line)
    return ["\n".join(lines) for lines in out]


class Interpreter:
    def __init__(self, remote, hosts: dict, on_event: Callable[[Event], None] | None = None,
                 clock: Callable[[], float] = time.monotonic):
        self.remote = remote
        self.hosts = hosts  # name -> inventory Host
        self.on_event = on_event or (lambda e: None)
        self.clock = clock  # the steps' durations (tests give a fixed one)

    def apply(self, plan: Plan, all_hosts: list[str]) -> Outcome:
        outcome = Outcome({h: "not started" for h in all_hosts})
        self._pending = None  # (restart step) whose node nginx still has out of service
        self._raw: dict[int, str] = {}  # a step's own output (a restart's peers' gate reads its start time)
        self._current: list[Step] = []
        try:
            return self._apply(plan, outcome)
        except KeyboardInterrupt:  # Ctrl-C or SIGTERM (tasks.py): stop here, say where each host is
            step = self._current[0] if self._current else None
            outcome.failed, outcome.interrupted = step, True
            outcome.error = ("interrupted" + (f" during {step.host}: {step.describe()}" if step else "")
                             + "; the step under way may have finished on its host")
            for s in self._current:
                outcome.hosts[s.host] = f"interrupted during: {s.describe()}"
            return outcome
        finally:
            if self._pending is not None:  # the end, a failure, or an interrupt: back in service
                problem = self._undrain()
                if problem and outcome.ok:
                    outcome.error = problem
                    outcome.hosts[self.hosts_nginx] = f"failed: {problem}"

    def _apply(self, plan: Plan, outcome: Outcome) -> Outcome:
        # A host is done once its changes are (the checks after them judge the whole cluster).
        remaining = {h: sum(1 for s in plan.steps if s.host == h and not s.check_only) for h in outcome.hosts}
        for h, n in remaining.items():
            if n == 0:
                outcome.hosts[h] = "nothing to change"
        for unit in _units(plan.steps):
            if isinstance(unit[0], Replan):
                outcome.stopped_at = unit[0]
                return outcome
            restarts = [s for s in unit if isinstance(s, RestartTomcat)]
            drained = bool(restarts) and all(_wave(s) for s in unit) and restarts[0].drain is not None
            if self._pending is not None and not drained:
                problem = self._undrain()
                if problem:
                    outcome.failed, outcome.error = self._pending_step, problem
                    return outcome
            by_host: dict[str, list[Step]] = {}
            for s in unit:
                by_host.setdefault(s.host, []).append(s)
            for h in by_host:
                if outcome.hosts[h] == "not started":
                    outcome.hosts[h] = "in progress"
            self._current = unit
            for s in unit:
                self.on_event(Event("started", s))
            started = self.clock()
            if drained:
                results = self._drained_restart(restarts, by_host)
            else:
                rs = self.remote.run_all([self.hosts[h] for h in by_host], lambda h: batch_script(by_host[h.name]))
                results = {h: self._judge(by_host[h], rs[h]) for h in by_host}
            seconds = self.clock() - started
            for h in by_host:
                outcome.seconds[h] = outcome.seconds.get(h, 0.0) + seconds
            failed = None
            judged = {id(s): r for h, per_step in results.items() for s, r in zip(by_host[h], per_step)}
            for s in unit:  # an application's restart: the other nodes' logs since, read too
                if isinstance(s, RestartTomcat) and s.peers and judged.get(id(s), (None,))[0]:
                    problem = self._peer_gate(s)
                    if problem:
                        judged[id(s)] = (False, problem)
            for s in unit:  # in the plan's order, whichever host answered first
                ok, text = judged.get(id(s), (None, ""))
                if ok is None:
                    continue  # not reached: an earlier step of this host failed
                if ok:
                    outcome.done.append(s)
                    remaining[s.host] -= 0 if s.check_only else 1
                    self.on_event(Event("done", s, text, seconds))
                else:
                    failed = failed or (s, text)
                    outcome.hosts[s.host] = f"failed: {text.splitlines()[0] if text else ''}"
                    self.on_event(Event("failed", s, text, seconds))
            for h in by_host:
                if not outcome.hosts[h].startswith(("failed", "nothing")):
                    outcome.hosts[h] = "done" if remaining[h] == 0 else "in progress"
            if failed:
                outcome.failed, outcome.error = failed
                return outcome
        return outcome

    def _peer_gate(self, s: RestartTomcat) -> str | None:
        """The log gate on the restart's peers (its step renders and judges it); a peer that cannot
        be reached is left to the checks after the rollout."""
        units = dict(s.peers)
        output = self._raw.get(id(s), "")
        rs = self.remote.run_all([self.hosts[h] for h in units], lambda h: s.peer_gate_script(output, units[h.name]))
        for h in units:
            r = rs.get(h)
            if r is not None and r.exit is not None:
                problem = s.check_peer(h, units[h], r.stdout)
                if problem:
                    return problem
        return None

    def _judge(self, steps: list[Step], result) -> list[tuple[bool | None, str]]:
        """(ok, text) per step: done text, failure message, or (None, "") for steps not reached."""
        if result.exit is None:  # the host was not reached or the connection dropped
            return [(False, f"{steps[0].host}: {result.why()}")] + [(None, "")] * (len(steps) - 1)
        outputs = split_output(result.stdout, len(steps))
        for s, text in zip(steps, outputs):
            self._raw[id(s)] = text
        failed_at = next((int(l.split()[1]) for l in result.stdout.splitlines() if l.startswith("@@failed ")), None)
        if failed_at is None and result.exit != 0:  # died outside a frame (killed, out of memory)
            failed_at = max((i for i in range(len(steps)) if f"@@step {i}" in result.stdout), default=0)
        out: list[tuple[bool | None, str]] = []
        for i, (s, text) in enumerate(zip(steps, outputs)):
            if failed_at is not None and i > failed_at:
                out.append((None, ""))
            elif failed_at == i:
                out.append((False, s.failure(text + ("\n" + result.stderr if result.stderr.strip() else ""))))
            else:
                problem = s.check(text)
                if problem is not None:
                    follow = s.followup(text)
                    if follow:
                        tail = self.remote.run(self.hosts[s.host], follow).stdout
                        logs = [l[5:] for l in tail.splitlines() if l.startswith("log: ")]
                        if logs:
                            problem += log_tail(logs)
                    out.append((False, problem))
                    out += [(None, "")] * (len(steps) - i - 1)
                    break
                out.append((True, s.done(text)))
        return out

    def _drained_restart(self, wave: list[RestartTomcat], by_host: dict[str, list[Step]]
                         ) -> dict[str, list[tuple[bool | None, str]]]:
        """A wave out of service in nginx (one reload), restarted on all its hosts at once, each
        checked. The wave goes back in service when the next step is not another drained wave,
        whose drain then puts it back and takes the next nodes out in one nginx reload; after a
        failure or an interrupt it goes back at once (the site on disk stays the one the plan
        wrote, so a rollback finds what it recorded)."""
        s = wave[0]
        nginx_host = self.hosts[s.drain.nginx_host]
        self.hosts_nginx = nginx_host.name
        names = ", ".join(x.host for x in wave)
        # Pending before the drain is sent: whatever happens from here (a failure, an interrupt in
        # the middle of the drain), the site goes back to the one the plan wrote.
        self._pending, self._pending_step, self._pending_names = s, s, names
        r = self.remote.run(nginx_host, s.drain_script())
        if not r.ok:
            return {s.host: [(False, f"{nginx_host.name}: could not take {names} out of service: "
                                     f"{r.why() if r.exit is None else summarize(r.stdout + r.stderr)}")]
                    + [(None, "")] * (len(by_host[s.host]) - 1)}
        rs = self.remote.run_all([self.hosts[h] for h in by_host], lambda h: batch_script(by_host[h.name]))
        return {h: self._judge(by_host[h], rs[h]) for h in by_host}

    def _undrain(self) -> str | None:
        s, self._pending = self._pending, None
        back = self.remote.run(self.hosts[s.drain.nginx_host], s.undrain_script())
        if not back.ok:
            return f"{s.drain.nginx_host}: could not put {self._pending_names} back in service: {back.why()}"
        return None

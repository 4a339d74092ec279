"""Recorded runs rendered for people: the data behind the output goldens (tests/test_output.py).

Each run is made by tcsession's real code from data captured on lab hosts: the planner plans
from the captured facts (tests/data/facts), the real Interpreter applies the plan through the
strict TEST DOUBLE of fakeremote.py answering with recorded output (the same answers as
tests/test_orchestration.py), with a fixed clock so the seconds shown are the same every time;
history is parsed by the real reader from `@@deploy` records as hosts print them; status is
judged by the real judges from the captured facts. Then tcsession.ui prints it all to a rich
Console: of a fixed width into a string (piped), or the real terminal (`python tests/outputs.py
KIND`, what the tmux goldens run).
"""

from __future__ import annotations

import base64
import dataclasses
import io
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
DATA = HERE / "data" / "facts"
sys.path.insert(0, str(HERE))

from fakeremote import Expect, FakeRemote  # noqa: E402
from tcsession import plan as planning  # noqa: E402
from tcsession import status, ui, view  # noqa: E402
from tcsession.apply import Interpreter  # noqa: E402
from tcsession.client import SessionRun  # noqa: E402
from tcsession.deploy import stopped  # noqa: E402
from tcsession.facts import parse_facts  # noqa: E402
from tcsession.inventory import parse_inventory  # noqa: E402
from tcsession.rollback import read_history  # noqa: E402
from tcsession.steps import FileChange, manifest_for  # noqa: E402

DEPLOY_ID = "20261201T100000Z-abcdef"
HOSTS = ("nginx", "tomcat1", "tomcat2")
PORTS = {  # `ss` as the deployed lab hosts answer it
    "nginx": "LISTEN 0 511 0.0.0.0:80 0.0.0.0:*\n@@udp\n",
    "tomcat1": "LISTEN 0 100 *:8080 *:*\nLISTEN 0 50 [::ffff:10.153.0.112]:4000 *:*\n@@udp\nUNCONN 0 0 228.0.0.4:45564 0.0.0.0:*\n",
    "tomcat2": "LISTEN 0 100 *:8080 *:*\nLISTEN 0 50 [::ffff:10.153.0.113]:4000 *:*\n@@udp\nUNCONN 0 0 228.0.0.4:45564 0.0.0.0:*\n",
}
STATE_SENT = "state: Manager [localhost#]; session state sent at 12/1/26, 10:00 AM received in [9] ms."
# What a Tomcat 10.1 whose cluster receiver port is taken logs (journal lines, as the restart
# step's `log: ` lines carry them), the longest line over 200 characters
BIND_FAILURE = [
    "Dec 01 10:00:04 tomcat1 tomcat10[812]: SEVERE: Unable to bind server socket to:/10.153.0.112:4000 throwing "
    "error.",
    "Dec 01 10:00:04 tomcat1 tomcat10[812]: java.net.BindException: Address already in use",
    "Dec 01 10:00:04 tomcat1 tomcat10[812]: SEVERE: Unable to start cluster. org.apache.catalina.tribes."
    "ChannelException: java.net.BindException: Address already in use; No faulty members identified.",
    "Dec 01 10:00:04 tomcat1 tomcat10[812]: SEVERE: The required Server component failed to start so Tomcat "
    "is unable to start.",
]


class StepClock:
    """A clock whose every other reading advances by the next recorded duration: the
    Interpreter reads it before and after each unit of steps."""

    def __init__(self, durations):
        self.durations, self.now, self.reads = list(durations), 100.0, 0

    def __call__(self) -> float:
        self.reads += 1
        if self.reads % 2 == 0 and self.durations:
            self.now += self.durations.pop(0)
        return self.now


#: the inventory as the operator named it (-i lab.toml): the commands suggested carry it
LAB = Path("lab.toml")


def inventory(path: Path = Path("hosts.toml")):
    """The lab's inventory with a delta setting changed, named `path` (relative: the goldens run in
    the checkout, so what is said about files beside it does not depend on where that is)."""
    text = (ROOT / "hosts.toml").read_text().partition("[delta]")[0]
    return parse_inventory(text + "[delta]\nchannel_send_options = 2\n", path)


def _facts(prefix: str) -> dict:
    return {n: parse_facts((DATA / f"{prefix}-{n}.txt").read_text()) for n in HOSTS}


def _run(answers: list[Expect], durations: list[float], ui_, facts: str = "deployed") -> tuple:
    inv = inventory(LAB)
    plan = planning.plan(inv, _facts(facts), "delta", deploy_id=DEPLOY_ID, time="t")
    fake = FakeRemote(answers)
    outcome = Interpreter(fake, {h.name: h for h in inv.hosts}, ui_.event, StepClock(durations)).apply(
        plan, list(HOSTS))
    fake.assert_done()
    return inv, plan, outcome


NO_PEER = "state: Manager [localhost#]: skipping state transfer. No members active in cluster group."


def deploy(progress) -> None:
    """The msm lab (captured) switched to delta mode: the lines before the steps as a deploy prints
    them (the facts and preflight timings as the lab measured them), the files, each Tomcat
    restarted out of service with its context.xml changed (the issue's "changed ...context.xml;
    restarted tomcat10, serving" line), the checks, the recap."""
    from tcsession.modes import check_running, mode_named

    inv = inventory(LAB)
    progress.line("all", "facts from 3 hosts", 0.5)
    progress.say(check_running(inv, mode_named("delta"), "msm", True), "bold yellow")
    progress.line("all", "preflight: 22 checks passed", 1.5)
    inv, plan, outcome = _run([
        Expect("tomcat1", "/etc/tomcat10/server.xml"), Expect("tomcat2", "/etc/tomcat10/server.xml"),
        Expect("nginx", "systemctl reload nginx"),
        Expect("tomcat1", "systemctl restart tomcat10", NO_PEER),
        Expect("nginx", "systemctl reload nginx"),
        Expect("tomcat2", "systemctl restart tomcat10", STATE_SENT + "\nmembers: 1"),
        Expect("nginx", "systemctl reload nginx"),
        *[Expect(h, "ss -Hntl", PORTS[h]) for h in HOSTS]], [0.1, 10.2, 9.4, 0.1], progress, "msm-sticky")
    assert outcome.ok, outcome.error
    progress.recap(view.recap(list(HOSTS), list(plan.steps), outcome.done, outcome.hosts, outcome.seconds))
    progress.say(f"deployed delta ({DEPLOY_ID}) in 22.4 s", "green")


def failure(progress) -> str:
    """The same change stopped at tomcat1's restart: what the operator reads, the final line
    (as `tcsession` prints the error: its brief when the progress showed the rest) included."""
    inv, plan, outcome = _run([
        Expect("tomcat1", "/etc/tomcat10/server.xml"), Expect("tomcat2", "/etc/tomcat10/server.xml"),
        Expect("nginx", "systemctl reload nginx"),
        Expect("tomcat1", "systemctl restart tomcat10",
               "tomcat10 stopped while starting\n" + "".join(f"log: {line}\n" for line in BIND_FAILURE), ok=False),
        Expect("nginx", "systemctl reload nginx")], [0.4, 6.1], progress)
    assert not outcome.ok
    progress.recap(view.recap(list(HOSTS), list(plan.steps), outcome.done, outcome.hosts, outcome.seconds))
    from tcsession.deploy import _advice

    e = stopped("deploy", outcome, DEPLOY_ID, outcome.done, _advice(inv, outcome, outcome.done, "delta"), progress)
    return "tcsession: " + (e.brief or str(e))


def _record(deploy_id: str, host: str, changes, rolled_back: bool = False) -> str:
    m = manifest_for(deploy_id, "delta", f"{deploy_id[:4]}-{deploy_id[4:6]}-{deploy_id[6:8]}T"
                     f"{deploy_id[9:11]}:{deploy_id[11:13]}:{deploy_id[13:15]}Z", changes, (),
                     {"tomcat10": "active"})
    data = m.to_json() if isinstance(m.to_json(), bytes) else m.to_json().encode()
    return (f"@@deploy {deploy_id} {'rolled-back' if rolled_back else 'applied'}\n"
            f"{base64.b64encode(data).decode()}\n@@dirs {deploy_id}\n")


def history_data() -> tuple[dict, list[str]]:
    """Three deploys as the hosts record them (the second rolled back), read by the real reader."""
    server = FileChange("/etc/tomcat10/server.xml", b"<Server/>", b"<Server><Cluster/></Server>", "640", "root:tomcat")
    war1 = FileChange("/var/lib/tomcat10/webapps/shop.war", None, b"PK shop 1.0", "644", "root:root")
    war2 = FileChange("/var/lib/tomcat10/webapps/shop.war", b"PK shop 1.0", b"PK shop 1.1", "644", "root:root")
    site = FileChange("/etc/nginx/sites-enabled/tcsession", None, b"upstream", "644", "root:root")
    ids = ("20261129T081502Z-0a1b2c", "20261130T173044Z-3d4e5f", "20261201T100000Z-abcdef")
    answers = {"nginx": _record(ids[0], "nginx", (site,)),
               "tomcat1": _record(ids[0], "tomcat1", (server, war1)) + _record(ids[1], "tomcat1", (war2,), True)
               + _record(ids[2], "tomcat1", (server,)),
               "tomcat2": _record(ids[0], "tomcat2", (server, war1)) + _record(ids[1], "tomcat2", (war2,), True)
               + _record(ids[2], "tomcat2", (server,))}
    fake = FakeRemote([Expect(h, "@@deploy", answers[h]) for h in HOSTS])
    return read_history(fake, inventory())


def msm_report() -> status.Report:
    """The msm lab (sticky, captured facts) judged by status, after a session check through nginx."""
    # a fixed path: the msm jars check names the lock beside the inventory, which must not depend on
    # where the checkout is (CI's clone) or on a lock a demo left in it
    inv = parse_inventory((ROOT / "hosts.toml").read_text(), Path("/x/hosts.toml"))
    facts = _facts("msm-sticky")
    hosts = [status.judge_nginx(inv, inv.nginx, facts["nginx"], "msm")]
    hosts += [status.judge_tomcat(inv, inv.host(t), facts[t], "msm") for t in HOSTS[1:]]
    run = SessionRun(requests=10, last_count=10, nodes={"tomcat1": 10},
                     session_ids=["36F7C332B031851572AF7DFCFE0D6634-n2.tomcat1"] * 10)
    return status.Report(tuple(hosts), "msm", run, 3, (("n1", "10.153.0.112:11211", 0), ("n2", "10.153.0.113:11211", 1)),
                         "n2", inventory="hosts.toml")


def delta_report() -> status.Report:
    """The delta lab (captured facts) with each Tomcat's membership log: tomcat1 sees tomcat2, tomcat2 sees
    tomcat1."""
    inv = inventory()
    facts = _facts("deployed")
    log = (DATA / "tomcat10-membership.log").read_text()  # tomcat2's view: member 10.153.0.112 added
    logs = {"tomcat1": log.replace("10, 153, 0, 112", "10, 153, 0, 113"), "tomcat2": log}
    hosts = [status.judge_nginx(inv, inv.nginx, facts["nginx"], "delta")]
    hosts += [status.judge_tomcat(inv, inv.host(t), dataclasses.replace(facts[t], cluster_log=logs[t]), "delta")
              for t in HOSTS[1:]]
    run = SessionRun(requests=10, last_count=10, nodes={"tomcat1": 5, "tomcat2": 5})
    return status.Report(tuple(hosts), "delta", run, 3, inventory="hosts.toml")


KINDS = ("deploy", "failure", "history", "status", "graph")


def render(kind: str, console, width: int | None = None) -> None:
    """One recorded run printed to `console` as the commands print it, fitted to `width` (None:
    as tcsession fits it, e.g. a terminal's width), in the checkout, where the inventories'
    relative paths lead."""
    import contextlib

    with contextlib.chdir(ROOT):
        _render(kind, console, width)


def _render(kind: str, console, width: int | None) -> None:
    if kind == "deploy":
        deploy(ui.Progress(console=console, width=width))
    elif kind == "failure":  # its last line as tcsession.tasks prints it
        ui.print_stopped(failure(ui.Progress(console=console, width=width)), console, width)
    elif kind == "history":
        ui.print_history(*history_data(), console=console, width=width)
    elif kind == "status":
        ui.print_status(msm_report(), console=console, width=width)
    elif kind == "graph":
        ui.print_graph(msm_report(), console, width)
        ui.print_graph(delta_report(), console, width)
    else:
        raise SystemExit(f"outputs.py: not one of {', '.join(KINDS)}: {kind}")


def piped(kind: str, width: int | None) -> str:
    """What `kind` prints into a pipe whose reader has `width` columns ($COLUMNS; None: not set)."""
    from rich.console import Console

    out = io.StringIO()
    render(kind, Console(file=out, force_terminal=False, color_system=None, highlight=False), width)
    return out.getvalue()


MARK = "@@output "  # `python tests/outputs.py all`: each kind's output after a line `@@output KIND`

if __name__ == "__main__":  # on a terminal (tests/test_output.py runs it in tmux)
    from rich.console import Console

    console = Console(highlight=False)
    for kind in KINDS if sys.argv[1] == "all" else sys.argv[1:]:
        if sys.argv[1] == "all":
            console.print(MARK + kind, markup=False, soft_wrap=True)
        render(kind, console)
    console.print(MARK + "end", markup=False, soft_wrap=True)

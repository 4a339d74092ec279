"""Steps: everything a deploy or a rollback does to a host, as frozen data.

A Plan is an ordered tuple of steps. The dry run prints it (`describe()` and, for files, the
diffs); tcsession.apply executes the same value and nothing else; rollback builds the same types
from the manifests. Each step renders its own shell (through tcsession.shell) and reads its own
output: `check()` judges what a check step saw, `done()` says what happened.
"""

from __future__ import annotations

import dataclasses
import difflib
import hashlib
import re
from typing import ClassVar

from tcsession import nginx, shell, state
from tcsession.modes import ExpectedPort, port_listening
from tcsession.probes import parse_memcached_probe, parse_ss


_KEY_ATTR = re.compile(rb'(encryptionKey=")[^"]*(")')


def mask_secrets(data: bytes) -> bytes:
    """What a diff may show of a file: the cluster key replaced (it lives in server.xml)."""
    return _KEY_ATTR.sub(rb"\1(the cluster key)\2", data)


def sha256(data: bytes | None) -> str | None:
    return None if data is None else hashlib.sha256(data).hexdigest()


@dataclasses.dataclass(frozen=True)
class FileChange:
    path: str
    before: bytes | None  # None: did not exist
    after: bytes | None  # None: remove
    mode: str  # octal string for the new file
    owner: str  # user:group for the new file
    before_mode: str = ""
    before_owner: str = ""
    before_link: str | None = None  # the file was a symlink to this target
    after_link: str | None = None  # make it a symlink to this target (rollback of a removal)

    @property
    def verb(self) -> str:
        if self.before is None and self.before_link is None:
            return "create"
        return "remove" if self.after is None and self.after_link is None else "change"

    def diff(self) -> str:
        if self.path == nginx.TLS_KEY:  # never shown, in no form
            return f"private key {self.path}: {self.verb} (not shown)\n"
        if self.path.endswith((".jar", ".war", ".crt")):
            size = lambda b: "" if b is None else f" ({len(b)} bytes)"  # noqa: E731
            return (f"binary {self.path}: sha256 {sha256(self.before) or '(none)'}{size(self.before)} -> "
                    f"{sha256(self.after) or '(removed)'}{size(self.after)}\n")
        a = mask_secrets(self.before or b"").decode("utf-8", "replace").splitlines(keepends=True)
        b = mask_secrets(self.after or b"").decode("utf-8", "replace").splitlines(keepends=True)
        if self.after_link is not None:
            b = [f"symlink -> {self.after_link}\n"]
        if self.before_link is not None:
            a = [f"symlink -> {self.before_link}\n"]
        lines = difflib.unified_diff(a, b, fromfile=f"{self.path}\t(now)" if self.before is not None
                                     or self.before_link else "/dev/null",
                                     tofile=self.path if self.after is not None or self.after_link
                                     else "/dev/null")
        out = "".join(lines)
        if not out and self.mode != self.before_mode:
            out = f"mode {self.before_mode} -> {self.mode}\n"
        return out


def summarize(output: str) -> str:
    """A failed step's output: what it said (one line), then the service's last log lines, one per
    line after "last log lines:" (tcsession.view prints them indented, once)."""
    lines = [l for l in output.strip().splitlines() if l.strip()]
    said = [l for l in lines if not l.startswith(("log: ", "state: "))]
    logs = [l[5:] for l in lines if l.startswith("log: ")]
    out = said[-1] if said else "no output"
    if logs:
        out += log_tail(logs)
    return out


def log_tail(logs: list[str], count: int = 5) -> str:
    """The last `count` log lines, appended to a failure message: one per line."""
    return "\nlast log lines:\n" + "\n".join(logs[-count:])


@dataclasses.dataclass(frozen=True)
class Step:
    host: str
    why: str
    parallel: ClassVar[bool] = False  # may run at the same time as its neighbours on other hosts
    check_only: ClassVar[bool] = False  # changes nothing: only looks

    def describe(self) -> str:
        raise NotImplementedError

    def script(self) -> str:
        raise NotImplementedError

    def check(self, output: str) -> str | None:
        """What is wrong, judged from the step's output (None: fine). Commands' exit codes are
        judged before this."""
        return None

    def followup(self, output: str) -> str | None:
        """A script whose output explains a failed check (the service's log), or None."""
        return None

    def done(self, output: str) -> str:
        return self.describe()

    def failure(self, output: str) -> str:
        return f"{self.host}: {self.describe()} failed: {summarize(output)}"


# --------------------------------------------------------------------------- packages


@dataclasses.dataclass(frozen=True)
class InstallPackages(Step):
    package_manager: str = ""
    packages: tuple[str, ...] = ()
    record: state.Manifest | None = None  # written first: the deploy's record of this install
    # the units of the Tomcat packages it installs: stopped once installed (Debian starts them with the
    # package's server.xml; a JVM still starting when the deploy writes its own could read that one
    # without a restart and answer the first node's state request with no clustered context)
    stop: tuple[str, ...] = ()
    parallel: ClassVar[bool] = True

    def describe(self) -> str:
        return f"install {' '.join(self.packages)}" + (f" (then stop {', '.join(self.stop)})" if self.stop else "")

    def script(self) -> str:
        pre = shell.record_script(self.record.id, self.record.to_json()) if self.record else ""
        return pre + shell.install_script(self.package_manager, self.packages, self.stop)

    def done(self, output: str) -> str:
        return f"installed {' '.join(self.packages)}"


def _versions(upgrades: tuple[tuple[str, str, str], ...]) -> str:
    return ", ".join(f"{n} {a} -> {b}" for n, a, b in upgrades)


@dataclasses.dataclass(frozen=True)
class RecordUpgrade(Step):
    """An upgrade's record on this host (its manifest: the versions before and after), written
    before any package changes, so that a stop leaves a record `rollback` reads."""

    record: state.Manifest | None = None
    parallel: ClassVar[bool] = True

    def describe(self) -> str:
        return f"record {self.record.id}: {_versions(self.record.packages_changed) or 'restarts owed'}"

    def script(self) -> str:
        return shell.record_script(self.record.id, self.record.to_json())

    def done(self, output: str) -> str:
        return f"recorded {self.record.id}"


@dataclasses.dataclass(frozen=True)
class UpgradeService(Step):
    """A service's packages upgraded (or downgraded) and the service running the new code: the
    package's scripts restart it, or it is restarted here; then active (and listening on `port`).
    memcached's, one host at a time after the Tomcats; nginx's last."""

    unit: str = ""
    package_manager: str = ""
    upgrades: tuple[tuple[str, str, str], ...] = ()  # (name, from, to)
    port: tuple[str, int] | None = None  # ("*", port): any address
    verb: str = "upgrade"  # "downgrade": an upgrade's rollback

    def describe(self) -> str:
        what = f"{self.verb} {_versions(self.upgrades)}, then" if self.upgrades else "restart owed:"
        return f"{what} {self.unit} running the new code ({self.why})"

    def script(self) -> str:
        return shell.upgrade_service(self.unit, self.package_manager, [(n, b) for n, _, b in self.upgrades], self.port)

    def done(self, output: str) -> str:
        pid = next((l[5:] for l in output.splitlines() if l.startswith("pid: ")), "")
        return (f"{self.verb}d {_versions(self.upgrades)}; " if self.upgrades else "") + f"{self.unit} running (PID {pid})"


@dataclasses.dataclass(frozen=True)
class Replan(Step):
    """Not a command: the files are planned from what the packages just installed put there, so
    the facts are read again and the rest of the deploy planned then."""

    def describe(self) -> str:
        return "read the hosts again and plan the files (they come from the packages installed above)"

    def script(self) -> str:
        return ""


# --------------------------------------------------------------------------- files


@dataclasses.dataclass(frozen=True)
class WriteFiles(Step):
    """Save the prior bytes and the manifest, then write every file atomically."""

    deploy_id: str = ""
    manifest: state.Manifest | None = None
    changes: tuple[FileChange, ...] = ()
    # recorded (manifest, prior bytes) here, written later by the host's RestartTomcat
    deferred: tuple[FileChange, ...] = ()
    parallel: ClassVar[bool] = True

    def describe(self) -> str:
        parts = []
        if self.changes:
            parts.append("write " + ", ".join(f"{c.verb} {c.path}" for c in self.changes))
        if self.deferred:
            parts.append("record " + ", ".join(c.path for c in self.deferred) + " (written during its restart)")
        return "; ".join(parts) or "record the deploy (its services as they were, for rollback)"

    def script(self) -> str:
        before = {c.path: c.before for c in (*self.changes, *self.deferred)}
        saves = [(int(r.saved.rsplit("/", 1)[1]), before[r.path]) for r in self.manifest.files
                 if r.saved is not None and r.path in before]
        writes = [(c.path, c.after, c.owner, c.mode) for c in self.changes]
        later = [c.path for c in self.deferred if c.after is not None]
        return shell.write_files_script(self.deploy_id, self.manifest.to_json(), saves, writes, later)

    def done(self, output: str) -> str:
        return f"wrote {len(self.changes)} file(s)" + (f", recorded {len(self.deferred)}" if self.deferred else "")


def manifest_for(deploy_id: str, mode: str, time: str, changes: tuple[FileChange, ...],
                 packages: tuple[str, ...] = (), services_before: dict | None = None) -> state.Manifest:
    records = []
    for i, c in enumerate(changes):
        records.append(state.FileRecord(
            path=c.path, existed=c.before is not None or c.before_link is not None,
            before_sha256=sha256(c.before), after_sha256=sha256(c.after), before_mode=c.before_mode,
            before_owner=c.before_owner, before_link=c.before_link,
            saved=f"files/{i}" if c.before is not None else None))
    return state.Manifest(deploy_id, mode, time, tuple(packages),
                          tuple(sorted((services_before or {}).items())), tuple(records))


@dataclasses.dataclass(frozen=True)
class RestoreFiles(Step):
    """Put a deploy's files back byte for byte and mark it rolled back; with conflicts (files
    changed since, restored under --force) their current bytes are kept beside the record."""

    deploy_id: str = ""
    changes: tuple[FileChange, ...] = ()
    conflicts: tuple[str, ...] = ()
    created_dirs: tuple[str, ...] = ()
    wave: int = 0  # >0: restored in that restart wave, out of service (files Tomcat redeploys on)
    marks: bool = True  # marks the deploy rolled back (the host's last RestoreFiles does)
    first_index: int = 0  # numbering of the kept edits (overwritten/<n>) across a host's steps
    parallel: ClassVar[bool] = True

    def describe(self) -> str:
        out = f"undo {self.deploy_id}: " + ", ".join(
            f"{'restore' if c.after is not None or c.after_link else 'remove'} {c.path}"
            + (" (edited since; kept beside the record)" if c.path in self.conflicts else "")
            for c in self.changes) if self.changes else f"mark {self.deploy_id} rolled back"
        if self.wave:
            out += f" (in wave {self.wave}, out of service: Tomcat redeploys the application when it changes)"
        return out

    def script(self) -> str:
        items = [(c.path, c.after, c.owner, c.mode, c.after_link, c.path in self.conflicts) for c in self.changes]
        return shell.restore_files_script(self.deploy_id, items, self.created_dirs, self.marks, self.first_index)

    def done(self, output: str) -> str:
        if not self.changes and self.marks:
            return f"marked {self.deploy_id} rolled back"
        return f"restored {len(self.changes)} file(s) of {self.deploy_id}"


# --------------------------------------------------------------------------- services


@dataclasses.dataclass(frozen=True)
class RestartMemcached(Step):
    digest: str = ""
    enable: bool = True

    def describe(self) -> str:
        return "restart memcached (before the Tomcats, one host at a time)"

    def script(self) -> str:
        return shell.restart_service("memcached", self.digest, self.enable)

    def done(self, output: str) -> str:
        return "restarted memcached"


@dataclasses.dataclass(frozen=True)
class ApplyFirewall(Step):
    """Load tcsession's nftables rules (tcsession.firewall) and enable the unit that loads them
    at boot, or (`remove`) delete the table and disable the unit."""

    remove: bool = False

    def describe(self) -> str:
        return ("remove tcsession's firewall table, disable tcsession-firewall" if self.remove
                else "load the firewall rules (nft -f, one transaction), enable tcsession-firewall")

    def script(self) -> str:
        return shell.firewall_remove() if self.remove else shell.firewall_apply()

    def done(self, output: str) -> str:
        return "removed the firewall table" if self.remove else "firewall rules loaded"


@dataclasses.dataclass(frozen=True)
class StopService(Step):
    unit: str = ""

    def describe(self) -> str:
        return f"stop {self.unit} ({self.why})"

    def script(self) -> str:
        return shell.stop_service(self.unit)

    def done(self, output: str) -> str:
        return f"stopped {self.unit} ({self.why})"


@dataclasses.dataclass(frozen=True)
class ApplyNginx(Step):
    digest: str = ""
    start: bool = False  # not running: enable and start it instead of a reload
    # the site to load now instead of the one written (the joining Tomcats marked down: their
    # start puts the written one back)
    site: bytes | None = None
    drain_timeout: int = 10  # [rolling] drain_timeout: the wait for the old workers

    def describe(self) -> str:
        return (f"nginx -t, then {'start' if self.start else 'reload'} nginx"
                + (" with the joining Tomcats marked down" if self.site is not None else ""))

    def script(self) -> str:
        put = shell.put_file(nginx.SITE, self.site, "root:root", "644") + "\n" if self.site is not None else ""
        return put + shell.nginx_apply(self.digest, self.start, self.drain_timeout)

    def done(self, output: str) -> str:
        return f"nginx -t ok, {'started' if self.start else 'reloaded'} nginx"


@dataclasses.dataclass(frozen=True)
class Drain:
    """A Tomcat out of service in nginx while it restarts (marked `down`: its sessions go to
    their backup nodes, nothing new reaches it), then back."""

    nginx_host: str
    drained: bytes
    site: bytes
    drain_timeout: int = 10  # [rolling] drain_timeout: the wait for the old workers


@dataclasses.dataclass(frozen=True)
class RestartTomcat(Step):
    """Restart (drained first when peers serve), wait until it serves and, with DeltaManager,
    report the session state it received; in the cluster modes wait until it sees `members` other
    Tomcats as cluster members; then stamp the configuration it runs with.

    The steps of one wave (same `wave` number, consecutive in the plan) share one Drain (every
    node of the wave `down` in nginx) and run on their hosts at the same time."""

    unit: str = ""
    address: str = ""
    port: int = 8080
    digest: str = ""
    test_page: bool = True  # wait for the test page's 200; without it, any HTTP answer on /
    drain: Drain | None = None
    waits_for_state: bool = False
    timeout: float = 120.0
    files: tuple[FileChange, ...] = ()  # the applications' files, written while it is stopped
    app_contexts: tuple[str, ...] = ()  # each must answer (not 404, not 5xx) once it serves
    clear: tuple[str, ...] = ()  # what Tomcat derived from a changed WAR, removed while stopped
    wave: int = 0  # 1, 2, ...: the wave it restarts in (0: alone)
    waves: int = 0  # how many waves the plan has
    wave_hosts: tuple[str, ...] = ()  # every node of its wave
    members: int = 0  # other Tomcats it must see as cluster members before the next wave
    # an application rollout: the other running Tomcats (host, unit), whose logs since its restart
    # the gate reads too (an old-version peer that cannot read what the new version sends)
    peers: tuple[tuple[str, str], ...] = ()
    dropped: tuple[str, ...] = ()  # classes of a sessions = "drop" rollout: their deserialization errors expected
    # an upgrade's packages (name, from, to), installed while the node is stopped; package_manager's
    upgrades: tuple[tuple[str, str, str], ...] = ()
    package_manager: str = ""
    verb: str = "upgrade"  # "downgrade": an upgrade's rollback
    # other services of the host restarted while it is stopped (unit, (address, port) or None): msm's memcached
    also: tuple[tuple[str, tuple[str, int] | None], ...] = ()

    def describe(self) -> str:
        if self.wave and len(self.wave_hosts) > 1:
            how = [f"wave {self.wave}/{self.waves} with {', '.join(h for h in self.wave_hosts if h != self.host)}"]
        elif self.wave:
            how = [f"wave {self.wave}/{self.waves}, alone"]
        else:
            how = ["one node at a time"]
        if self.drain:
            how.append("out of service in nginx meanwhile")
        how.append("waits until it serves" + (" and has the session state" if self.waits_for_state else "")
                   + (f" and sees {self.members} cluster member(s)" if self.members else ""))
        if self.app_contexts:
            how.append("then checks " + ", ".join(self.app_contexts))
        if self.peers:
            how.append("and the logs of " + ", ".join(h for h, _ in self.peers))
        what = f"restart {self.unit}"
        if self.upgrades:
            what += f" (stopped: {self.verb} {_versions(self.upgrades)}"
            what += (f"; {', '.join(u for u, _ in self.also)} restarted meanwhile)" if self.also else ")")
        elif self.also:
            what += f" (stopped: {', '.join(u for u, _ in self.also)} restarted meanwhile)"
        if self.files:
            what += " (stopped: " + ", ".join(_file_line(c) for c in self.files) + ")"
        return f"{what} ({', '.join(how)})"

    def script(self) -> str:
        path, any_status = ("/test.jsp", False) if self.test_page else ("/", True)
        writes = [(c.path, c.after, c.owner, c.mode) for c in self.files]
        return shell.restart_tomcat(self.unit, self.address, self.port, path, any_status, self.timeout,
                                    self.digest, self.waits_for_state, writes, self.clear, self.app_contexts,
                                    self.members,
                                    shell.upgrade_packages(self.package_manager, [(n, b) for n, _, b in self.upgrades])
                                    if self.upgrades else "", self.also)

    def drain_script(self) -> str:
        return shell.nginx_site(nginx.SITE, self.drain.drained, self.drain.drain_timeout)

    def undrain_script(self) -> str:
        return shell.nginx_site(nginx.SITE, self.drain.site, self.drain.drain_timeout)

    def check(self, output: str) -> str | None:
        """The state transfer's outcome, then the log gate: what the restarted Tomcat logged that
        users hit most stops the rolling restart here, before the next node is touched."""
        if self.waits_for_state:
            lines = [l for l in output.splitlines() if l.startswith("state: ")]
            if any("no matching context manager" in l.lower() for l in lines):
                return (f"{self.host}: {self.unit} got no session state (the peer asked had no started context); "
                        "its sessions are only on the other nodes: restart it again")
        found = judge_log_gate([l[6:] for l in output.splitlines() if l.startswith("gate: ")], self.dropped)
        if found is None:
            return None
        what, line = found
        return (f"{self.host}: {self.unit} restarted but logged {what}: {line.strip()[:300]} "
                f"(the next Tomcat was not touched; fix the cause, then deploy again)")

    def peer_gate_script(self, output: str, unit: str) -> str:
        """A peer's log gate for this restart: what `unit` logged since the restart began (the
        restarted node's clock, printed by its script; preflight checks the clocks agree)."""
        since = next((l[7:].strip() for l in output.splitlines() if l.startswith("since: ")), "")
        # a second for what the new node replicated at its application check to arrive
        return "sleep 1\n" + shell.log_gate(unit, int(since) - 2 if since.isdigit() else None)

    def check_peer(self, peer: str, unit: str, output: str) -> str | None:
        found = judge_log_gate([l[6:] for l in output.splitlines() if l.startswith("gate: ")], self.dropped)
        if found is None:
            return None
        what, line = found
        return (f"{peer}: {unit} (still running the previous version) logged {what} once {self.host} restarted: "
                f"{line.strip()[:300]} (the next Tomcat was not touched; {self.host} runs the new version: "
                "`inv rollback` puts the previous one back)")

    def done(self, output: str) -> str:
        what = f"restarted {self.unit}, serving"
        if self.upgrades:
            what = f"{self.verb}d {_versions(self.upgrades)}; {what}"
        for line in output.splitlines():
            if line.startswith("also: "):
                unit, _, pids = line[6:].partition(" ")
                what += f", {unit} restarted (PID {pids})"
        if self.files:
            what = f"{', '.join(_file_line(c, done=True) for c in self.files)}; {what}"
        apps = [l[len("app: "):] for l in output.splitlines() if l.startswith("app: ")]
        if apps:
            what += ", " + ", ".join(apps)
        if self.waits_for_state:
            lines = [l for l in output.splitlines() if l.startswith("state: ")]
            if any("session state" in l and "received" in l for l in lines):
                what += ", session state received"
            elif any("no members active" in l.lower() for l in lines):
                what += ", no peer answered (no state received)"
        members = [l[9:] for l in output.splitlines() if l.startswith("members: ")]
        if members:
            what += f", sees {members[-1]} cluster member(s)"
        return what


def _file_line(c: FileChange, done: bool = False) -> str:
    name = c.path.rsplit("/", 1)[1]
    if c.path.endswith(".war"):
        if c.after is None:
            return f"{'removed' if done else 'remove'} {name}"
        old = f"{sha256(c.before)[:12]} ({len(c.before)} bytes)" if c.before is not None else "none"
        return f"{'put' if done else 'put'} {name} sha256 {old} -> {sha256(c.after)[:12]} ({len(c.after)} bytes)"
    return f"{c.verb} {c.path}" if not done else f"{c.verb}d {c.path}".replace("eed ", "ed ")


@dataclasses.dataclass(frozen=True)
class CountSessions(Step):
    """sessions = "drop": before anything changes, how many sessions this node holds that the
    rollout will lose (its application's new version cannot read them), asked of the node: the
    running Tomcat's Manager (JMX, attached locally) per context and, in msm mode, the sessions
    stored in this host's memcached node. Counting changes nothing the rollout depends on; a count
    that fails is said, not fatal (the operator accepted the loss)."""

    unit: str = ""
    contexts: tuple[str, ...] = ()
    classes: tuple[str, ...] = ()  # the classes whose serialVersionUID changed, for the preview
    memcached: tuple[str, int] | None = None
    parallel: ClassVar[bool] = True
    check_only: ClassVar[bool] = True

    def describe(self) -> str:
        what = ", ".join(self.contexts)
        mc = f" and in memcached {self.memcached[0]}:{self.memcached[1]}" if self.memcached else ""
        return (f"count the sessions of {what} it holds{mc} (sessions = \"drop\": the new version cannot read "
                f"them: {', '.join(self.classes[:3])}{' ...' if len(self.classes) > 3 else ''}; they are lost)")

    def script(self) -> str:
        return shell.count_sessions(self.unit, self.contexts, self.memcached)

    def counts(self, output: str) -> dict[str, int | None]:
        """Context (or `memcached <node>`) -> sessions held (None: unknown)."""
        out: dict[str, int | None] = {}
        for line in output.splitlines():
            if line.startswith("sessions: not running"):
                out.update({c: 0 for c in self.contexts})
            elif line.startswith("sessions: unknown"):
                out.update({c: None for c in self.contexts})
            elif line.startswith("sessions: "):
                ctx, _, n = line[10:].rpartition(" ")
                out[ctx] = int(n) if n.isdigit() else None
            elif line.startswith("memcached-sessions: "):
                node, _, n = line[20:].rpartition(" ")
                out[f"memcached {node}"] = int(n) if n.isdigit() else None
        return out

    def done(self, output: str) -> str:
        counts = self.counts(output)
        said = [f"{n if n is not None else 'an unknown number of'} session(s) of {c}" if not c.startswith("memcached")
                else f"{n if n is not None else 'an unknown number of'} session(s) in {c}" for c, n in counts.items()]
        why = next((l[len("sessions: unknown "):] for l in output.splitlines() if l.startswith("sessions: unknown")), "")
        return (f"holds {', '.join(said) or 'no count'}: lost with this rollout (sessions = \"drop\")"
                + (f" (could not count: {why.strip()[:200]})" if why else ""))


# The log gate after a Tomcat restart: (what it means, the line's pattern), first match wins.
DESERIALIZE = "a session it could not deserialize (the application's versions disagree)"
LOG_GATE = (
    ("a session it cannot replicate", re.compile(r"Unable to serialize delta request")),
    ("no session state from its peers (state transfer timed out)", re.compile(r"No session state sen[dt] at .*received")),
    ("a message it could not decrypt (wrong or mismatched key)", re.compile(r"[Ff]ailed to decrypt")),
    # DeltaManager (deltaManager.loading.ioe / .cnfe, receiveMessage.error), BackupManager's map
    # (tribes' AbstractReplicatedMap, MapMessage: no "Manager" in its name), MSM, and the cause
    (DESERIALIZE, re.compile(
        r"InvalidClassException|local class incompatible|while loading persisted sessions|"
        r"Unable to receive message through TCP channel|deserialize MapMessage|Unable to apply diff to key|"
        r"Could not deserialize session|Could not load session with id")),
    ("a missing class", re.compile(r"NoClassDefFoundError")),
    ("a session attribute that is not serializable",
     re.compile(r"NotSerializableException|Cannot serialize session attribute")),
    ("a SEVERE from the session manager", re.compile(
        r"SEVERE.*(\bManager\b|Manager\[|DeltaManager|BackupManager|StandardManager|PersistentManager|javakaffee|"
        r"MemcachedSessionService|ClassNotFoundException: .*Manager)")),
)
_CAUSE = re.compile(r"(?:InvalidClassException|ClassNotFoundException): ([\w.$]+)")


def judge_log_gate(lines, dropped: tuple[str, ...] = ()) -> tuple[str, str] | None:
    """(what it means, the line) for the first line of a Tomcat's log that should stop a rolling
    restart, or None; a deserialization error's line comes with its cause's (the class). dropped:
    the classes of an application rolled with sessions = "drop": its deserialization errors are
    expected while both versions run, as long as every class their causes name is one of these."""
    lines = list(lines)
    causes = [(m.group(1), l) for l in lines for m in _CAUSE.finditer(l)]
    expected = bool(dropped) and {c for c, _ in causes} <= set(dropped)
    for line in lines:
        for what, pattern in LOG_GATE:
            if pattern.search(line):
                if what == DESERIALIZE:
                    if expected:
                        break
                    cause = next((l for _, l in causes if l != line), None)
                    if cause and not _CAUSE.search(line):
                        line = f"{line.rstrip()} | {cause.strip()}"
                return what, line
    return None


# --------------------------------------------------------------------------- checks


@dataclasses.dataclass(frozen=True)
class CheckPorts(Step):
    ports: tuple[ExpectedPort, ...] = ()
    units: tuple[tuple[str, str], ...] = ()  # ExpectedPort.unit -> the host's unit, for its log
    parallel: ClassVar[bool] = True
    check_only: ClassVar[bool] = True

    def describe(self) -> str:
        return f"check {len(self.ports)} port(s) listening"

    def script(self) -> str:
        return shell.listeners_script()

    def _missing(self, output: str) -> list[ExpectedPort]:
        tcp, _, udp = output.partition("@@udp")
        listeners = parse_ss(tcp, "tcp") + parse_ss(udp, "udp")
        return [e for e in self.ports if not port_listening(e, listeners)]

    def check(self, output: str) -> str | None:
        missing = self._missing(output)
        if not missing:
            return None
        e = missing[0]
        return f"{self.host}: nothing listens on {e.proto} {e.address}:{e.port} ({dict(self.units).get(e.unit, e.unit)})"

    def followup(self, output: str) -> str | None:
        missing = self._missing(output)
        return shell.log_tail(dict(self.units).get(missing[0].unit, missing[0].unit)) if missing else None

    def done(self, output: str) -> str:
        return f"ports listening: {len(self.ports)} checked"


@dataclasses.dataclass(frozen=True)
class CheckMemcached(Step):
    """MSM needs every memcached node from every Tomcat."""

    nodes: tuple[tuple[str, int], ...] = ()
    parallel: ClassVar[bool] = True
    check_only: ClassVar[bool] = True

    def describe(self) -> str:
        return f"check {len(self.nodes)} memcached node(s) reachable from this Tomcat"

    def script(self) -> str:
        return shell.memcached_probe_script(self.nodes)

    def check(self, output: str) -> str | None:
        seen = parse_memcached_probe(output)
        for address, port in self.nodes:
            if "version" not in seen.get(f"{address}:{port}", {}):
                return (f"{self.host}: cannot reach memcached at {address}:{port} (MSM needs every node from "
                        f"every Tomcat); check that memcached runs there and that a firewall lets "
                        f"{self.host} in on {port}/tcp")
        return None

    def done(self, output: str) -> str:
        return f"memcached: {len(self.nodes)} node(s) reachable"


@dataclasses.dataclass(frozen=True)
class Plan:
    """Every step of a deploy or a rollback, in order."""

    kind: str  # "deploy delta", "deploy msm", "rollback <id>"
    steps: tuple[Step, ...] = ()

    @property
    def empty(self) -> bool:
        return not self.steps

    def for_host(self, host: str) -> tuple[Step, ...]:
        return tuple(s for s in self.steps if s.host == host)

    def files(self, host: str) -> tuple[FileChange, ...]:
        return tuple(c for s in self.for_host(host) for c in (
            s.changes if isinstance(s, (WriteFiles, RestoreFiles)) else s.files if isinstance(s, RestartTomcat) else ()))

    def restarts(self, host: str) -> bool:
        return any(isinstance(s, RestartTomcat) for s in self.for_host(host))

    def lines(self) -> list[str]:
        """The plan as the preview and the run show it: `host  what` per step."""
        return [f"{s.host}  {s.describe()}" for s in self.steps]

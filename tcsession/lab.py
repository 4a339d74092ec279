"""The built-in lab: real hosts (systemd-nspawn containers booting systemd) on a bridge.

Every host is an overlay over one cached Debian root file system: the root is built once with
mmdebstrap (with the .deb files of Tomcat, nginx and memcached downloaded into its apt cache,
so that deploy can install them inside a host without internet), and each host gets its own
upper directory with its hostname, address, SSH host key and the lab's root login key.

State lives in two places, both outside the project:
- /var/cache/tcsession/rootfs/<release>-<hash>/  the cached root (read-only lower layer)
- /var/lib/tcsession/lab/<name>/                 key, known_hosts, lab.json, per-host layers

Kernel state (bridge, overlay mounts, container processes) can outlive the process that made
it; `up` recognises a stale lab and clears it, and `down` leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import fcntl
import hashlib
import ipaddress
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterable
from pathlib import Path

from tcsession import shell
from tcsession.errors import TcsessionError
from tcsession.inventory import Inventory, lab_state_dir

ROOTFS_CACHE = Path("/var/cache/tcsession/rootfs")
LAB_FAILED_HINT = "/var/lib/tcsession/lab/<name>.failed-up/"

# What every host has, like a minimal server install.
BASE_PACKAGES = (
    "systemd", "systemd-sysv", "dbus", "openssh-server", "iproute2", "procps", "curl",
    "python3", "ca-certificates", "less", "libpam-systemd",
    "sudo",  # a lab with sudo users ([lab] sudo_users, nopasswd_users) logs in as one of them
)
# Downloaded (not installed) into the root's apt cache: what deploy installs, per release.
DEPLOY_PACKAGES = {
    "bookworm": ("tomcat10", "nginx", "memcached", "tomcat-jakartaee-migration", "nftables"),
    "bullseye": ("tomcat9", "nginx", "memcached", "nftables"),
}
# Also in the root's apt cache: the older versions still in the release (apt-get download NAME=VERSION),
# so that hosts can start from them offline and `upgrade` (and its rollback) be proven to the
# security archive's newer ones; and the distribution's automatic upgraders, which preflight and
# status detect ([packages] automatic).
OLDER_PACKAGES = {
    "bookworm": ("tomcat10=10.1.55-1~deb12u1", "tomcat10-common=10.1.55-1~deb12u1",
                 "libtomcat10-java=10.1.55-1~deb12u1", "openjdk-17-jre-headless=17.0.19+10-1~deb12u2",
                 "nginx=1.22.1-9+deb12u9", "nginx-common=1.22.1-9+deb12u9", "memcached=1.6.18-1"),
    "bullseye": (),
}
def older_install_script(release: str, role: str) -> str:
    """Install the release's older versions (OLDER_PACKAGES) that a host of `role` runs, from the
    root's apt cache (offline): a lab that starts from them, for `upgrade` to be proven."""
    mine = [p for p in OLDER_PACKAGES.get(release, ()) if p.startswith("nginx") == (role == "nginx")]
    if not mine:
        raise TcsessionError(f"lab: no older packages kept for {release}")
    return ("DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends --allow-downgrades "
            + " ".join(shell.q(p) for p in mine) + (" curl" if role == "tomcat" else "") + " >/dev/null")


def install_older(inv: Inventory, log=print) -> None:
    """`lab.up --older`: every host on the release's older packages (older_install_script)."""
    from tcsession.facts import require_ok
    from tcsession.remote import Remote

    release = inv.lab.release if inv.lab else "bookworm"
    scripts = {h.name: older_install_script(release, h.role) for h in inv.hosts}
    with Remote(inv) as remote:
        require_ok(remote.run_all(list(inv.hosts), lambda h: scripts[h.name]), "installing the older packages")
    log(f"lab {inv.lab.name if inv.lab else ''}: the older packages installed: "
        + ", ".join(p for p in OLDER_PACKAGES[release]))


AUTOMATIC_UPGRADERS = {"bookworm": ("unattended-upgrades", "needrestart"), "bullseye": ()}
ROOTFS_VERSION = "1"  # bump when the build recipe changes: a new cache key, a fresh build

REQUIRED_PROGRAMS = {
    "mmdebstrap": "apt-get install -y mmdebstrap",
    "systemd-nspawn": "apt-get install -y systemd-container",
    "ip": "apt-get install -y iproute2",
    "ssh-keygen": "apt-get install -y openssh-client",
    "mount": "apt-get install -y mount",
}


@dataclasses.dataclass(frozen=True)
class LabHost:
    name: str
    address: str

    def machine(self, lab: str) -> str:
        return f"{lab}-{self.name}"


@dataclasses.dataclass(frozen=True)
class LabSpec:
    """What a lab is: derived from an inventory's [lab] table and its hosts."""

    name: str
    release: str
    subnet: ipaddress.IPv4Network
    hosts: tuple[LabHost, ...]
    sudo_users: tuple[str, ...] = ()  # sudo with the lab's password (state_dir/sudo-password)
    nopasswd_users: tuple[str, ...] = ()  # sudo without a password
    root_login: bool = True  # false: PermitRootLogin no (the lab itself then enters hosts with nsenter)
    jump_host: str = ""  # the other hosts take SSH logins only from this host's address

    @property
    def state_dir(self) -> Path:
        return lab_state_dir(self.name)

    @property
    def sudo_password_file(self) -> Path:
        return self.state_dir / "sudo-password"

    @property
    def setup(self) -> dict:
        """What the hosts are made with besides their names and addresses (a change remakes them)."""
        return {"sudo_users": list(self.sudo_users), "nopasswd_users": list(self.nopasswd_users),
                "root_login": self.root_login, "jump_host": self.jump_host}

    @property
    def bridge(self) -> str:
        return f"tcs-{self.name}"[:15]

    @property
    def gateway(self) -> str:
        return str(self.subnet.network_address + 1)

    @property
    def key(self) -> Path:
        return self.state_dir / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        return self.state_dir / "known_hosts"


def spec_from_inventory(inv: Inventory) -> LabSpec:
    if inv.lab is None:
        raise TcsessionError(
            f"{inv.path}: no [lab] table; this inventory describes real servers, not the lab "
            "(use the shipped hosts.toml, or add [lab] name = \"tcsession\")")
    return LabSpec(name=inv.lab.name, release=inv.lab.release, subnet=inv.lab.subnet,
                   hosts=tuple(LabHost(h.name, h.address) for h in inv.hosts + inv.removed),
                   sudo_users=inv.lab.sudo_users, nopasswd_users=inv.lab.nopasswd_users,
                   root_login=inv.lab.root_login, jump_host=inv.lab.jump_host)


def render_inventory(name: str = "tcsession", release: str = "bookworm", tomcats: int = 2,
                     subnet: str = "10.153.0.0/24") -> str:
    """A lab inventory with one nginx host and `tomcats` Tomcat hosts (.111, .112, ...)."""
    net = ipaddress.IPv4Network(subnet)
    if not 2 <= tomcats <= 100:
        raise TcsessionError(f"lab: --tomcats={tomcats}; choose 2 to 100 Tomcat hosts (the cluster needs two)")
    base = net.network_address
    lines = [
        "# Generated by tcsession lab: the built-in lab's hosts.",
        "[lab]", f'name = "{name}"', f'release = "{release}"', f'subnet = "{net}"', "",
        "[nginx.nginx]", f'address = "{base + 111}"', "",
    ]
    for i in range(1, tomcats + 1):
        lines += [f"[tomcat.tomcat{i}]", f'address = "{base + 111 + i}"', ""]
    lines += ["[app]", "test_page = true  # the lab's client and status use /test.jsp", ""]
    return "\n".join(lines)


# ---------------------------------------------------------------- preflight


def check_prerequisites() -> None:
    if os.geteuid() != 0:
        raise TcsessionError("lab: must run as root (it creates a bridge, mounts and containers); "
                             "run it with sudo or as root")
    for prog, fix in REQUIRED_PROGRAMS.items():
        if shutil.which(prog) is None:
            raise TcsessionError(f"lab: {prog} not found; install it with: {fix}")


def _run(*cmd: str, check: bool = True, **kw) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if check and proc.returncode != 0:
        err = (proc.stderr or proc.stdout).strip().splitlines()
        raise TcsessionError(f"lab: `{' '.join(cmd)}` failed (exit {proc.returncode}): "
                             f"{err[-1] if err else 'no output'}")
    return proc


# ---------------------------------------------------------------- root file system


def debian_mirrors(paths: tuple[Path, ...] = (Path("/etc/apt/sources.list"),
                                                Path("/etc/apt/sources.list.d"))) -> tuple[str, str]:
    """The Debian mirror and security mirror this machine's apt uses (read, never hard-coded)."""
    uris: list[str] = []
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files += sorted(p.glob("*.sources")) + sorted(p.glob("*.list"))
        elif p.is_file():
            files.append(p)
    for f in files:
        text = f.read_text(errors="replace")
        uris += re.findall(r"^\s*URIs:\s*(\S+)", text, re.M)
        uris += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", text, re.M)
    main = next((u for u in uris if re.search(r"/debian/?$", u)), None)
    security = next((u for u in uris if re.search(r"/debian-security/?$", u)), None)
    if main is None:
        raise TcsessionError("lab: no Debian mirror found in /etc/apt/sources.list(.d); "
                             "add one (deb <mirror>/debian bookworm main) and retry")
    if security is None:
        security = main.rstrip("/") + "-security"
    return main.rstrip("/"), security.rstrip("/")


def rootfs_path(release: str) -> Path:
    key = hashlib.sha256(
        json.dumps([ROOTFS_VERSION, BASE_PACKAGES, DEPLOY_PACKAGES[release], OLDER_PACKAGES[release],
                    AUTOMATIC_UPGRADERS[release]]).encode()
    ).hexdigest()[:12]
    return ROOTFS_CACHE / f"{release}-{key}"


def build_rootfs(release: str, log=print) -> Path:
    """The cached root for `release`, built on first use (about a minute, needs the mirror)."""
    if release not in DEPLOY_PACKAGES:
        raise TcsessionError(f"lab: release {release!r} is not supported; use one of "
                             f"{', '.join(DEPLOY_PACKAGES)}")
    target = rootfs_path(release)
    if (target / ".tcsession-complete").exists():
        return target
    ROOTFS_CACHE.mkdir(parents=True, exist_ok=True)
    with open(ROOTFS_CACHE / f"{release}.lock", "w") as lock:  # one builder at a time (parallel tests)
        fcntl.flock(lock, fcntl.LOCK_EX)
        if (target / ".tcsession-complete").exists():
            return target
        return _build_rootfs(release, target, log)


def _build_rootfs(release: str, target: Path, log) -> Path:
    main, security = debian_mirrors()
    tmp = target.with_name(target.name + ".building")
    if tmp.exists():
        shutil.rmtree(tmp)
    sources = [f"deb {main} {release} main", f"deb {main} {release}-updates main",
               f"deb {security} {release}-security main"]
    download = " ".join(DEPLOY_PACKAGES[release] + AUTOMATIC_UPGRADERS[release])
    hooks = [
        # The .deb files deploy will install, kept in the root's apt cache with the lists.
        f'chroot "$1" apt-get install -y --download-only {download}',
        *([f'chroot "$1" sh -c "cd /var/cache/apt/archives && apt-get download -q {" ".join(OLDER_PACKAGES[release])}"']
          if OLDER_PACKAGES[release] else []),
        *shell.lab_build_hooks(),
    ]
    cmd = ["mmdebstrap", "--variant=apt", "--include=" + ",".join(BASE_PACKAGES),
           "--skip=cleanup/apt/lists,cleanup/apt/cache"]
    for h in hooks:
        cmd.append("--customize-hook=" + h)
    cmd += [release, str(tmp), *sources]
    log(f"lab: building the {release} root file system in {target} (once; about a minute)")
    started = time.monotonic()
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tail = " | ".join((proc.stderr or proc.stdout).strip().splitlines()[-3:])
        raise TcsessionError(f"lab: mmdebstrap failed for {release} from {main}: {tail}")
    (tmp / ".tcsession-complete").write_text(time.strftime("%F %T\n"))
    tmp.rename(target)
    log(f"lab: root file system built in {time.monotonic() - started:.0f} s")
    return target


# ---------------------------------------------------------------- per-host layer


def render_network(address: str, prefixlen: int) -> str:
    return (
        "[Match]\nName=host0\n\n"
        f"[Network]\nAddress={address}/{prefixlen}\nLinkLocalAddressing=no\nIPv6AcceptRA=no\n\n"
        "[Route]\nDestination=224.0.0.0/4\nScope=link\n"
    )


def render_hosts_file(spec: LabSpec, host: LabHost) -> str:
    lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
    for h in spec.hosts:
        lines.append(f"{h.address}\t{h.name}")
    return "\n".join(lines) + "\n"


SSHD_DROPIN = """\
# tcsession lab: key-only root login, one host key per host.
HostKey /etc/ssh/ssh_host_ed25519_key
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UseDNS no
"""


_PLAIN_SETUP = {"sudo_users": [], "nopasswd_users": [], "root_login": True, "jump_host": ""}


def render_sshd_dropin(spec: LabSpec, host: LabHost) -> str:
    """The lab's sshd settings for one host: root login as [lab] root_login says, and behind a
    jump host, logins only from the jump host's address."""
    text = SSHD_DROPIN
    if not spec.root_login:
        text = text.replace("PermitRootLogin prohibit-password", "PermitRootLogin no")
    jump = next((h for h in spec.hosts if h.name == spec.jump_host), None)
    if jump is not None and jump.name != host.name:
        text += f"# Reached only through the jump host {jump.name}.\nAllowUsers *@{jump.address}\n"
    return text


def render_sudoers(spec: LabSpec) -> str:
    lines = ["# tcsession lab: its sudo users."]
    lines += [f"{u} ALL=(ALL:ALL) ALL" for u in spec.sudo_users]
    lines += [f"{u} ALL=(ALL:ALL) NOPASSWD: ALL" for u in spec.nopasswd_users]
    return "\n".join(lines) + "\n"


def make_users(spec: LabSpec, merged: Path, pubkey: str, password: str | None) -> None:
    """The lab's sudo users in a host's root (before it boots): each with the lab's login key, a
    password (the lab's, sudo_users) or none (nopasswd_users: locked), and its sudoers line."""
    users = spec.sudo_users + spec.nopasswd_users
    if not users:
        return
    _write(merged / "etc/sudoers.d/tcsession-lab", render_sudoers(spec), 0o440)
    _write(merged / "tmp/tcsession-lab.pub", pubkey)
    script = "set -e\n" + "".join(
        f"id -u {u} >/dev/null 2>&1 || useradd -m -s /bin/bash {u}\n"
        f"install -d -m 700 -o {u} -g {u} /home/{u}/.ssh\n"
        f"install -m 600 -o {u} -g {u} /tmp/tcsession-lab.pub /home/{u}/.ssh/authorized_keys\n"
        for u in users) + "rm -f /tmp/tcsession-lab.pub\n"
    _run("chroot", str(merged), "sh", "-c", script)
    if spec.sudo_users and password is not None:  # on standard input: never in an argument
        _run("chroot", str(merged), "chpasswd",
             input="".join(f"{u}:{password}\n" for u in spec.sudo_users))


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(mode)


def prepare_host(spec: LabSpec, host: LabHost, pubkey: str) -> tuple[Path, str]:
    """Make the host's upper layer; return its merged root dir and its SSH host public key."""
    hdir = spec.state_dir / "hosts" / host.name
    upper, work, merged = hdir / "upper", hdir / "work", hdir / "merged"
    for d in (upper, work, merged):
        d.mkdir(parents=True, exist_ok=True)
    _write(upper / "etc/hostname", host.name + "\n")
    _write(upper / "etc/hosts", render_hosts_file(spec, host))
    _write(upper / "etc/resolv.conf", "# tcsession lab: no DNS, hosts are in /etc/hosts\n")
    _write(upper / "etc/systemd/network/10-host0.network",
           render_network(host.address, spec.subnet.prefixlen))
    _write(upper / "etc/ssh/sshd_config.d/tcsession-lab.conf", render_sshd_dropin(spec, host))
    _write(upper / "root/.ssh/authorized_keys", pubkey, 0o600)
    (upper / "root/.ssh").chmod(0o700)
    hostkey = upper / "etc/ssh/ssh_host_ed25519_key"
    if not hostkey.exists():
        _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"root@{host.name}",
             "-f", str(hostkey))
    return merged, (hostkey.with_suffix(".pub")).read_text().split()[0:2]


def _mounted(path: Path) -> bool:
    target = str(path)
    with open("/proc/self/mounts") as f:
        return any(line.split()[1] == target for line in f)


def _mount_overlay(lower: Path, hdir: Path) -> None:
    merged = hdir / "merged"
    if _mounted(merged):
        return
    _run("mount", "-t", "overlay", "overlay", "-o",
         f"lowerdir={lower},upperdir={hdir / 'upper'},workdir={hdir / 'work'}", str(merged))


# ---------------------------------------------------------------- processes


def _nspawn_pid_alive(pid: int, merged: Path) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return (bool(cmdline) and cmdline[0].endswith(b"systemd-nspawn")
            and str(merged).encode() in cmdline)


def _container_inits(spec: LabSpec) -> list[int]:
    """PID-namespace inits (a container's systemd) whose root is one of this lab's overlays:
    found even when their systemd-nspawn was killed and they were reparented."""
    marker = f"upperdir={spec.state_dir}/hosts/"
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            status = (proc / "status").read_text()
            nspid = next(l for l in status.splitlines() if l.startswith("NSpid:")).split()[1:]
            if len(nspid) < 2 or nspid[-1] != "1":
                continue
            with open(proc / "mountinfo") as f:
                root = next((l for l in f if l.split()[4] == "/"), "")
        except (OSError, StopIteration, IndexError):
            continue
        if marker in root:
            found.append(int(proc.name))
    return found


def _proc_state(pid: int) -> str | None:
    """A process's state letter (R, S, D, Z, ...), or None when it does not exist."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[-1].split()[0] if ")" in stat else None


def _reap(pid: int) -> None:
    """Collect our own exited child (a container started by this process): not a process left."""
    try:
        os.waitpid(pid, os.WNOHANG)
    except (ChildProcessError, OSError):
        pass


def lab_processes(spec: LabSpec, pids: Iterable[int] = ()) -> list[int]:
    """Every process of the lab still running: the recorded systemd-nspawn pids (even while
    they are exiting, when their command line already reads empty), any systemd-nspawn with
    this lab's directory in its arguments, each container's init, and whatever is left in the
    hosts' cgroups. Zombies are not counted (their parent collects them; ours are reaped)."""
    found: set[int] = set()
    for pid in pids:
        state = _proc_state(pid)
        if state == "Z":
            _reap(pid)
            state = _proc_state(pid)
        if state is not None and state != "Z":
            found.add(pid)
    marker = str(spec.state_dir).encode() + b"/"
    me = os.getpid()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == me:
            continue
        try:
            args = (proc / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and args[0].endswith(b"systemd-nspawn") and any(a.startswith(marker) for a in args):
            found.add(int(proc.name))
    found.update(_container_inits(spec))
    for root in _cgroup_roots():
        for top in (root / "tcsession").glob(f"{spec.name}-*"):
            for procs in top.rglob("cgroup.procs"):
                try:
                    found.update(int(x) for x in procs.read_text().split())
                except (OSError, ValueError):
                    pass
    return sorted(p for p in found if _proc_state(p) not in (None, "Z"))


def _wait_lab_processes_gone(spec: LabSpec, pids: Iterable[int], timeout: float = 10.0) -> None:
    """Return when no process of the lab is left: nspawn ends a second or two after its
    container's init, while the kernel tears the namespaces down. Bounded: what is still
    there after `timeout` is killed; what survives that too is an error naming the pids."""
    pids = list(pids)
    deadline = time.monotonic() + timeout
    left = lab_processes(spec, pids)
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = lab_processes(spec, pids)
    if not left:
        return
    for pid in lab_processes(spec):  # not a recorded pid alone: it could be reused by now
        try:
            os.kill(pid, signal.SIGKILL)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.monotonic() + 5
    while left and time.monotonic() < deadline:
        time.sleep(0.1)
        left = lab_processes(spec, pids)
    if left:
        raise TcsessionError(f"lab {spec.name}: processes {', '.join(map(str, left))} did not end after "
                             f"SIGKILL; see ps -o pid,stat,cmd -p {','.join(map(str, left))}, then run "
                             f"the same `tcsession lab.down` again")


def _bridge_exists(bridge: str) -> bool:
    return Path(f"/sys/class/net/{bridge}").exists()


def _read_state(spec: LabSpec) -> dict:
    try:
        return json.loads((spec.state_dir / "lab.json").read_text())
    except (OSError, ValueError):
        return {}


def host_pids(spec: LabSpec) -> dict[str, int | None]:
    """Each lab host's container process id, or None when it is not running."""
    state = _read_state(spec).get("pids", {})
    out: dict[str, int | None] = {}
    for h in spec.hosts:
        pid = state.get(h.name)
        merged = spec.state_dir / "hosts" / h.name / "merged"
        out[h.name] = pid if pid and _nspawn_pid_alive(pid, merged) else None
    return out


def is_up(spec: LabSpec) -> bool:
    return _bridge_exists(spec.bridge) and all(host_pids(spec).values()) and spec.key.exists()


def check_up(inv: Inventory) -> None:
    """Refuse to send anything to a lab inventory's addresses while its lab is down (a no-op for
    an inventory of real servers)."""
    if inv.lab is None:
        return
    spec = spec_from_inventory(inv)
    if not is_up(spec):
        from tcsession.errors import UnreachableError
        from tcsession.workdir import command

        raise UnreachableError(
            f"{inv.path}: the lab {spec.name!r} is down (its hosts {spec.subnet} do not exist); "
            f"run `{command(inv.path, 'lab.up')}` first", {h.name: "the lab is down" for h in inv.hosts})


def _cgroup_roots() -> list[Path]:
    """The cgroup hierarchies a container's systemd keeps its units in: cgroup v1/hybrid's
    name=systemd (and unified) trees, or the cgroup v2 root."""
    base = Path("/sys/fs/cgroup")
    if (base / "cgroup.controllers").exists():
        return [base]
    return [base / n for n in ("systemd", "unified") if (base / n / "cgroup.procs").exists()]


def _host_cgroups(spec: LabSpec, name: str) -> list[Path]:
    return [root / "tcsession" / f"{spec.name}-{name}" for root in _cgroup_roots()]


def _remove_cgroups(spec: LabSpec) -> None:
    for root in _cgroup_roots():
        for top in sorted((root / "tcsession").glob(f"{spec.name}-*")):
            for d in sorted((p for p in top.rglob("*") if p.is_dir()), key=lambda p: len(p.parts), reverse=True):
                try:
                    d.rmdir()
                except OSError:
                    pass
            try:
                top.rmdir()
            except OSError:
                pass


def _spawn(spec: LabSpec, host: LabHost, merged: Path) -> int:
    """Start a host's systemd-nspawn in a cgroup of its own. Without one, every container's
    systemd shared the cgroup nspawn was started in and they removed each other's unit cgroups:
    units failed at random with status=219/CGROUP and hosts booted "degraded"."""
    cgroups = _host_cgroups(spec, host.name)
    for cg in cgroups:
        cg.mkdir(parents=True, exist_ok=True)

    # A shell moves itself into the cgroups, then becomes nspawn (same pid). Not a preexec_fn:
    # Python code between fork and exec can deadlock in a process with threads (a pytest-xdist
    # worker has them), leaving a child that never starts its container.
    enter = 'while [ "$1" != -- ]; do echo $$ > "$1/cgroup.procs" || exit 1; shift; done; shift; exec "$@"'
    log = open(spec.state_dir / "hosts" / host.name / "console.log", "ab")
    proc = subprocess.Popen(
        ["sh", "-c", enter, "sh", *map(str, cgroups), "--",
         "systemd-nspawn", "--register=no", "--keep-unit", "-D", str(merged), "--boot",
         f"--network-bridge={spec.bridge}", f"--machine={host.machine(spec.name)}",
         "--resolv-conf=off", "--timezone=off", "--link-journal=no", "--console=read-only"],
        stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    log.close()
    return proc.pid


def _stop_pid(pid: int, merged: Path, timeout: float = 15.0) -> None:
    if not _nspawn_pid_alive(pid, merged):
        return
    os.kill(pid, signal.SIGTERM)  # nspawn powers the container off cleanly
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _nspawn_pid_alive(pid, merged):
            return
        time.sleep(0.1)
    os.kill(pid, signal.SIGKILL)
    for _ in range(50):
        if not _nspawn_pid_alive(pid, merged):
            return
        time.sleep(0.1)


def _wait_ssh(address: str, deadline: float) -> None:
    while True:
        try:
            with socket.create_connection((address, 22), timeout=1) as s:
                s.settimeout(2)
                if s.recv(4).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        if time.monotonic() > deadline:
            raise TcsessionError(f"lab: {address}:22 did not answer SSH in time; its boot console "
                                 f"is kept in {LAB_FAILED_HINT}")
        time.sleep(0.1)


def _host_init(spec: LabSpec, name: str) -> int | None:
    """The pid (on this machine) of a lab host's systemd: the PID-namespace init whose root is
    that host's overlay."""
    marker = f"upperdir={spec.state_dir}/hosts/{name}/upper,"
    for pid in _container_inits(spec):
        try:
            with open(f"/proc/{pid}/mountinfo") as f:
                if any(l.split()[4] == "/" and marker in l for l in f):
                    return pid
        except (OSError, IndexError):
            continue
    return None


def _in_host(spec: LabSpec, host: LabHost, command: str, connect_timeout: int = 0) -> list[str]:
    """A command line running `command` as root inside a lab host: over SSH as root, or, where
    root cannot log in ([lab] root_login = false), by entering the container's namespaces."""
    if spec.root_login:
        extra = ["-o", f"ConnectTimeout={connect_timeout}"] if connect_timeout else []
        return ["ssh", "-i", str(spec.key), "-o", f"UserKnownHostsFile={spec.known_hosts}",
                "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", *extra,
                f"root@{host.address}", command]
    pid = None
    for _ in range(100):  # sshd answered, so its init is there; give /proc a moment
        pid = _host_init(spec, host.name)
        if pid:
            break
        time.sleep(0.05)
    if pid is None:
        return ["sh", "-c", f"echo 'no container init for {host.name}'; exit 1"]
    return ["nsenter", f"--target={pid}", "--mount", "--uts", "--ipc", "--net", "--pid", "--root", "--wd",
            "sh", "-c", command]


def _record_degraded(spec: LabSpec, name: str) -> None:
    """A host booted "degraded": keep which units failed and their journal, for a look."""
    host = next(h for h in spec.hosts if h.name == name)
    proc = subprocess.run(
        _in_host(spec, host, shell.failed_units_report()),
        stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
    path = spec.state_dir.with_name(f"{spec.name}.{name}.degraded.log")
    path.write_text(proc.stdout + proc.stderr)
    print(f"lab: {name} booted degraded; failed units and their logs in {path}")


def _wait_booted(spec: LabSpec, deadline: float) -> None:
    """sshd answers before boot has finished: wait until systemd says running or degraded."""
    procs = {h.name: subprocess.Popen(
        _in_host(spec, h, shell.wait_system_running(), connect_timeout=5),
        stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        for h in spec.hosts}
    for name, proc in procs.items():
        try:
            out, _ = proc.communicate(timeout=max(1.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            proc.kill()
            raise TcsessionError(f"lab: {name} did not finish booting in time") from None
        state = (out.strip().splitlines() or [""])[-1]  # after any pam_nologin notice
        if state == "degraded":
            _record_degraded(spec, name)
        if state not in ("running", "degraded"):
            raise TcsessionError(f"lab: {name} booted as {state!r}; "
                                 "see the failed units on it (it lists them)")


# ---------------------------------------------------------------- up / down


def _orphan_veths(spec: LabSpec) -> list[str]:
    """This lab's container veth links left with no bridge: the kernel frees a dead container's
    network namespace asynchronously (seen here: up to a minute, while its TCP connections wind
    down), and nspawn cannot make a link of the same name meanwhile ("File exists")."""
    prefix = ("vb-" + spec.name)[:9]  # nspawn shortens long names to a prefix and a hash
    found = []
    for link in Path("/sys/class/net").iterdir():
        if (link.name.startswith(prefix) and not (link / "master").exists()
                and (link / "ifindex").exists() and "veth" in _link_kind(link.name)):
            found.append(link.name)
    return found


def _link_kind(name: str) -> str:
    proc = subprocess.run(["ip", "-d", "-o", "link", "show", "dev", name], capture_output=True, text=True)
    return proc.stdout


def _stale_mounts(spec: LabSpec) -> list[str]:
    prefix = str(spec.state_dir / "hosts") + "/"
    with open("/proc/self/mounts") as f:
        return [line.split()[1] for line in f if line.split()[1].startswith(prefix)]


def down(spec: LabSpec, log=print) -> None:
    """Stop every host, unmount, delete the bridge and the lab's state. Safe to repeat."""
    check_prerequisites()
    # The hosts' veth links: the kernel removes them when a container's network namespace is
    # cleaned up, which happens asynchronously after its processes end. A new container with
    # the same name cannot be made while its old link exists ("File exists").
    brif = Path(f"/sys/class/net/{spec.bridge}/brif")
    veths = [p.name for p in brif.iterdir()] if brif.exists() else []
    pids = _read_state(spec).get("pids", {})
    running = [pid for name, pid in pids.items() if _nspawn_pid_alive(pid, spec.state_dir / "hosts" / name / "merged")]
    for name, pid in pids.items():
        _stop_pid(pid, spec.state_dir / "hosts" / name / "merged")
    # A container whose pid was never recorded (a crash during up) is found by its root dir.
    hosts_dir = spec.state_dir / "hosts"
    merged_dirs = sorted(hosts_dir.glob("*/merged")) if hosts_dir.exists() else []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            for merged in merged_dirs:
                if _nspawn_pid_alive(int(proc.name), merged):
                    _stop_pid(int(proc.name), merged)
    # What a killed nspawn left running inside (its payload is reparented, not ended):
    # killing a PID namespace's init ends every process in it.
    for _ in range(50):
        inits = _container_inits(spec)
        if not inits:
            break
        for pid in inits:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.1)
    _wait_lab_processes_gone(spec, running)
    for m in sorted(_stale_mounts(spec), reverse=True):
        _run("umount", m, check=False)
        if _mounted(Path(m)):
            _run("umount", "-l", m)
    deadline = time.monotonic() + 5
    while any(Path(f"/sys/class/net/{v}").exists() for v in veths) and time.monotonic() < deadline:
        time.sleep(0.1)
    for v in veths:
        if Path(f"/sys/class/net/{v}").exists():
            _run("ip", "link", "del", v, check=False)
    _remove_cgroups(spec)
    if _bridge_exists(spec.bridge):
        _run("ip", "link", "del", spec.bridge)
    for v in _orphan_veths(spec):
        _run("ip", "link", "del", v, check=False)
    if spec.state_dir.exists():
        shutil.rmtree(spec.state_dir)
    log(f"lab {spec.name}: down")


def _keep_consoles(spec: LabSpec) -> None:
    """Keep the hosts' boot consoles of a failed `up` for a look (state_dir is removed)."""
    keep = spec.state_dir.with_name(spec.name + ".failed-up")
    shutil.rmtree(keep, ignore_errors=True)
    keep.mkdir(parents=True)
    for console in (spec.state_dir / "hosts").glob("*/console.log"):
        shutil.copy(console, keep / f"{console.parent.name}.console.log")


# Every container's systemd (and journald, udev...) takes inotify instances from one shared
# per-user limit; Debian's default of 128 runs out with a dozen hosts ("Failed to create inotify
# object: Too many open files" on the console, then no sshd). Raised for the lab's machine.
INOTIFY_LIMITS = {"/proc/sys/fs/inotify/max_user_instances": 8192,
                  "/proc/sys/fs/inotify/max_user_watches": 1048576}


def raise_inotify_limits(limits: dict = INOTIFY_LIMITS) -> None:
    for path, want in limits.items():
        try:
            if int(Path(path).read_text()) < want:
                Path(path).write_text(f"{want}\n")
        except (OSError, ValueError) as e:
            raise TcsessionError(f"lab: cannot raise {path} to {want} ({e}); set it with "
                                 f"sysctl -w {path[len('/proc/sys/'):].replace('/', '.')}={want}") from None


def up(spec: LabSpec, log=print, ssh_timeout: float = 60.0) -> None:
    """Bring the lab's hosts up, SSH-ready. A running lab is left as it is; a stale one cleared."""
    check_prerequisites()
    raise_inotify_limits()
    state = _read_state(spec)
    if (is_up(spec) and state.get("hosts") == [dataclasses.asdict(h) for h in spec.hosts]
            and state.get("setup", _PLAIN_SETUP) == spec.setup):
        log(f"lab {spec.name}: already up ({len(spec.hosts)} hosts)")
        return
    if (spec.state_dir.exists() or _bridge_exists(spec.bridge) or _stale_mounts(spec)
            or _orphan_veths(spec)):
        log(f"lab {spec.name}: clearing a stale or different lab first")
        down(spec, log=lambda *_: None)
    lower = build_rootfs(spec.release, log=log)
    started = time.monotonic()
    spec.state_dir.mkdir(parents=True, exist_ok=True)
    spec.state_dir.chmod(0o700)
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", f"tcsession-lab-{spec.name}",
         "-f", str(spec.key))
    pubkey = spec.key.with_suffix(".pub").read_text()
    password = None
    if spec.sudo_users:  # made here, kept root-only beside the key; never printed
        password = secrets.token_urlsafe(18)
        fd = os.open(spec.sudo_password_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
    _run("ip", "link", "add", spec.bridge, "type", "bridge")
    _run("ip", "addr", "add", f"{spec.gateway}/{spec.subnet.prefixlen}", "dev", spec.bridge)
    _run("ip", "link", "set", spec.bridge, "up")
    known, pids = [], {}
    try:
        for h in spec.hosts:
            merged, (ktype, kdata) = prepare_host(spec, h, pubkey)
            known.append(f"{h.address} {ktype} {kdata}")
            if spec.jump_host and h.name != spec.jump_host:  # reached by name, resolved by the jump host
                known.append(f"{h.name} {ktype} {kdata}")
            _mount_overlay(lower, merged.parent)
            make_users(spec, merged, pubkey, password)
            pids[h.name] = _spawn(spec, h, merged)
        (spec.state_dir / "lab.json").write_text(json.dumps({
            "name": spec.name, "release": spec.release, "rootfs": str(lower),
            "hosts": [dataclasses.asdict(h) for h in spec.hosts], "setup": spec.setup, "pids": pids}, indent=1))
        spec.known_hosts.write_text("\n".join(known) + "\n")
        deadline = time.monotonic() + ssh_timeout
        for h in spec.hosts:
            _wait_ssh(h.address, deadline)
        _wait_booted(spec, deadline)
    except BaseException:
        (spec.state_dir / "lab.json").write_text(json.dumps({"pids": pids}))
        _keep_consoles(spec)
        down(spec, log=lambda *_: None)
        raise
    log(f"lab {spec.name}: {len(spec.hosts)} hosts SSH-ready in {time.monotonic() - started:.1f} s "
        f"on {spec.bridge} ({spec.gateway})")
    said = []
    if spec.sudo_users:
        said.append(f"sudo users {', '.join(spec.sudo_users)} (their password is in {spec.sudo_password_file}, "
                    "root-only; tcsession reads it when TCSESSION_SUDO_PASSWORD is not set)")
    if spec.nopasswd_users:
        said.append(f"NOPASSWD sudo users {', '.join(spec.nopasswd_users)}")
    if not spec.root_login:
        said.append("root cannot log in")
    if spec.jump_host:
        said.append(f"the other hosts take SSH logins only from {spec.jump_host}")
    if said:
        log(f"lab {spec.name}: " + "; ".join(said))


def stop_host(spec: LabSpec, name: str) -> None:
    """Power one host off (as if it crashed or was shut down); its disk (upper layer) stays."""
    pids = _read_state(spec).get("pids", {})
    merged = spec.state_dir / "hosts" / name / "merged"
    if name in pids:
        _stop_pid(pids[name], merged)


def start_host(spec: LabSpec, name: str, timeout: float = 60.0) -> None:
    """Boot one stopped host again with its disk as it was."""
    state = _read_state(spec)
    host = next(h for h in spec.hosts if h.name == name)
    merged = spec.state_dir / "hosts" / name / "merged"
    if _nspawn_pid_alive(state.get("pids", {}).get(name, 0), merged):
        return
    state["pids"][name] = _spawn(spec, host, merged)
    (spec.state_dir / "lab.json").write_text(json.dumps(state, indent=1))
    deadline = time.monotonic() + timeout
    _wait_ssh(host.address, deadline)
    _wait_booted(dataclasses.replace(spec, hosts=(host,)), deadline)


def leftovers(spec: LabSpec) -> list[str]:
    """Anything of this lab still on the machine (what `down` must leave empty)."""
    found = []
    if _bridge_exists(spec.bridge):
        found.append(f"bridge {spec.bridge}")
    found += [f"mount {m}" for m in _stale_mounts(spec)]
    if spec.state_dir.exists():
        found.append(f"state dir {spec.state_dir}")
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                cmd = Path(f"/proc/{proc.name}/cmdline").read_bytes()
            except OSError:
                continue
            if b"systemd-nspawn" in cmd and str(spec.state_dir).encode() in cmd:
                found.append(f"process {proc.name}")
    found += [f"container init {pid}" for pid in _container_inits(spec)]
    found += [f"link {v}" for v in _orphan_veths(spec)]
    found += [f"cgroup {p}" for root in _cgroup_roots() for p in (root / "tcsession").glob(f"{spec.name}-*")]
    for link in Path("/sys/class/net").iterdir():
        master = link / "master"
        if master.exists() and master.resolve().name == spec.bridge:
            found.append(f"link {link.name}")
    return found

"""The one module that writes remote shell: every command tcsession sends to a host (and the few
the lab runs inside its containers) is built here, from typed values, with every argument quoted.

Nothing here runs anything: functions return POSIX sh text; tcsession.remote sends it, the
steps (tcsession.steps) and facts (tcsession.facts) say which to send and read what comes back.
Output that code parses is framed by `@@<section>` header lines (see facts.split_sections).
"""

from __future__ import annotations

import base64
import re
import shlex
from collections.abc import Iterable, Sequence

from tcsession import state

q = shlex.quote


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def write_bytes(path_expr: str, data: bytes) -> str:
    """Put bytes into a file (path_expr is already quoted or a "$var")."""
    return f"printf %s {_b64(data)} | base64 -d > {path_expr}"


# --------------------------------------------------------------------------- facts

# The units and packages facts ask about, whatever the host's family.
TOMCAT_UNITS = ("tomcat11", "tomcat10", "tomcat9", "tomcat")
PACKAGES = (*TOMCAT_UNITS, "nginx", "memcached", "curl", "nftables")


def units_state(units: tuple[str, ...]) -> str:
    """Each unit's `Id=` and `ActiveState=` lines, as `systemctl show -p Id,ActiveState` prints them
    (tcsession.facts.parse_units), from `systemctl list-units`: `show` loads every unit it is asked
    about, and most of these do not exist on a host (three of the four Tomcat units, firewalld):
    11 ms against 6 on the lab, in every host's facts. A unit systemd has not loaded is inactive,
    as `show` says of it. The unit's name is found in its line wherever a marker puts it; if
    `list-units` fails (an older systemd refusing an option), `show` answers as before."""
    names = " ".join(f"{u}.service" for u in units)
    return (f"if lu=$(systemctl list-units --all --plain --no-legend --no-pager {names} 2>/dev/null); then\n"
            f"  printf '%s\\n' \"$lu\" | awk -v want={q(names)} 'BEGIN {{ n = split(want, w, \" \") }} "
            "{ for (i = 1; i <= NF - 2; i++) if ($i ~ /[.]service$/) { s[$i] = $(i + 2); break } } "
            "END { for (i = 1; i <= n; i++) { u = w[i]; print \"Id=\" u; "
            "print \"ActiveState=\" ((u in s) ? s[u] : \"inactive\"); print \"\" } }'\n"
            f"else systemctl show -p Id,ActiveState {names} 2>/dev/null; fi")


def facts_script() -> str:
    """What every command reads of a host (tcsession.facts.parse_facts). Each program started costs
    the host 1 to 4 ms of CPU (systemctl, ss and dpkg-query 3 to 4 ms, cat or awk 1 ms; three
    hosts share two cores in the lab), so the shell's builtins read what they can, and one
    dpkg-query answers both the packages and the automatic upgraders' sections: 35 -> 26 ms a host."""
    from tcsession import unattended as u

    everything = " ".join(q(p) for p in dict.fromkeys((*PACKAGES, *u.APT_PACKAGES, *u.PACKAGE_GLOBS)))
    return rf"""
export LC_ALL=C
echo @@os-release; {{ while IFS= read -r l || [ -n "$l" ]; do printf '%s\n' "$l"; done < /etc/os-release; }} 2>/dev/null
echo @@hostname; {{ read -r h < /proc/sys/kernel/hostname && echo "$h"; }} 2>/dev/null || hostname
echo @@system; sys=$(systemctl is-system-running 2>&1); echo "$sys"
# "running" means no unit has failed: the list is only asked otherwise
echo @@failed; [ "$sys" = running ] || systemctl --failed --no-legend --plain 2>/dev/null
echo @@pkgmgr; for p in apt-get dnf yum; do command -v $p >/dev/null 2>&1 && echo $p; done
echo @@packages
if command -v dpkg-query >/dev/null 2>&1; then
  # name|version|status of these and of @@automatic's packages (automatic_script reads $dq)
  dq=$(dpkg-query -W -f='${{Package}}|${{Version}}|${{db:Status-Abbrev}}\n' {everything} 2>/dev/null)
  pkgs=$(printf '%s\n' "$dq" | awk -F'|' -v want={q(" " + " ".join(PACKAGES) + " ")} '$3 ~ /^ii/ && index(want, " " $1 " ") {{print $1, $2}}')
else
  pkgs=$(rpm -q --qf '%{{NAME}} %{{VERSION}}-%{{RELEASE}}\n' tomcat nginx memcached curl nftables 2>/dev/null | grep -v 'not installed')
fi
echo "$pkgs"
echo @@active
{units_state(TOMCAT_UNITS + ("nginx", "memcached", "tcsession-firewall", "firewalld"))}
echo @@available
# Only asked when something is missing (it is the slowest question here).
case "$pkgs" in *tomcat*|*nginx*) ;; *)
if command -v apt-cache >/dev/null 2>&1; then
  apt-cache policy tomcat11 tomcat10 tomcat9 nginx memcached 2>/dev/null | awk '/^[a-z]/{{p=$1; sub(":$","",p)}} /Candidate:/{{ if ($2!="(none)") print p, $2}}'
elif command -v rpm >/dev/null 2>&1; then echo tomcat; echo nginx; echo memcached
fi;;
esac
# one ss for both (3.5 ms each): its Netid column says which section a line goes to
ss -Hntul 2>/dev/null | awk '$1 == "tcp" || $1 == "udp" {{ p = $1; $1 = ""; sub(/^ /, ""); s[p] = s[p] $0 "\n" }}
  END {{ printf "@@ss-tcp\n%s@@ss-udp\n%s", s["tcp"], s["udp"] }}'
""" + automatic_script()


# needrestart's own configuration evaluated as needrestart does (its defaults, then
# needrestart.conf, which reads conf.d/*.conf), and for each unit whether override_rc lets it
# restart it (needrestart's loop: the first matching key decides).
_NEEDRESTART_PL = r"""
our %nrconf = (restart => "i", override_rc => {}, verbosity => 1); our $LOGPREF = "";
do "/etc/needrestart/needrestart.conf";
if ($@) { (my $e = $@) =~ s/\s+/ /g; print "error $e\n"; }
print "restart $nrconf{restart}\n";
for my $u (@ARGV) {
  my $r = 1;
  for my $re (keys %{$nrconf{override_rc}}) { if ($u =~ /$re/) { $r = $nrconf{override_rc}{$re}; last; } }
  print "unit $u ", ($r ? 1 : 0), "\n";
}
"""


def automatic_script() -> str:
    """The distribution's automatic upgraders (tcsession.unattended.parse_upgraders): Debian's
    unattended-upgrades (installed, apt-config's APT::Periodic and Package-Blacklist, its timer)
    and needrestart (its effective restart mode and override_rc per cluster unit), the RHEL
    family's dnf-automatic / dnf5-automatic / yum-cron (timers, apply_updates), and the cluster's
    packages installed. Cheap: perl runs only where needrestart is installed, apt-config and the
    timer only where unattended-upgrades is."""
    from tcsession import unattended as u

    globs = " ".join(q(g) for g in u.PACKAGE_GLOBS)
    units = " ".join(q(f"{x}.service") for x in u.UNITS)
    timers = " ".join(q(t) for t in u.RPM_TIMERS)
    confs = " ".join(q(c) for c in u.RPM_CONFS)
    return f"""echo @@automatic
if command -v dpkg-query >/dev/null 2>&1; then
  # $dq: facts_script's one dpkg-query (name|version|status), read here by the shell alone
  uu=
  while IFS='|' read -r n v st; do
    case "$n" in {"|".join(u.APT_PACKAGES)}) echo "pkg $n $v $st"
      case "$n $st" in "unattended-upgrades ii"*) uu=1;; esac;; esac
    case "$st" in ii*) case "$n" in {"|".join(u.PACKAGE_GLOBS)}) echo "cluster $n";; esac;; esac
  done <<EOF
$dq
EOF
  # its timer and apt's settings matter only where unattended-upgrades is installed (9 ms a host)
  if [ -n "$uu" ]; then
  echo "timer {u.APT_TIMER} $(systemctl is-enabled {u.APT_TIMER} 2>/dev/null)"
  apt-config dump 2>/dev/null | grep -E '^(APT::Periodic::(Enable|Unattended-Upgrade) |Unattended-Upgrade::Package-Blacklist:: )' | sed 's/^/apt /'
  fi
  if [ -r /etc/needrestart/needrestart.conf ] && command -v perl >/dev/null 2>&1; then
    perl -e {q(_NEEDRESTART_PL)} {units} 2>/dev/null | sed 's/^/nr /'
  fi
elif command -v rpm >/dev/null 2>&1; then
  rpm -q --qf 'pkg %{{NAME}} %{{VERSION}}-%{{RELEASE}} ii\\n' {" ".join(u.RPM_PACKAGES)} 2>/dev/null | grep '^pkg '
  rpm -qa --qf '%{{NAME}}\\n' {globs} 2>/dev/null | sed 's/^/cluster /'
  for t in {timers}; do echo "timer $t $(systemctl is-enabled $t 2>/dev/null)"; done
  for f in {confs}; do [ -r "$f" ] && grep -E '^[[:space:]]*apply_updates[[:space:]]*=' "$f" | tail -n 1 | sed "s|^|conf $f |"; done
fi
"""


def clock_script() -> str:
    """The host's clock (preflight's skew check: a round trip of its own, timed on this machine,
    so that the uncertainty is one short round trip and not the facts' seconds)."""
    return "date +%s.%N\n"


def preflight_facts_script() -> str:
    """What preflight reads besides the facts (same round trip): the host name and what it
    resolves to, Java's version, free disk, python3 (the multicast probe), listeners with
    their process, nginx's version, SELinux's mode and the boolean nginx's proxying needs."""
    return r"""
echo @@pf-resolve; h=$(hostname); echo "$h"; getent ahostsv4 "$h" 2>/dev/null | awk '{print $1}' | sort -u
echo @@pf-java; command -v java >/dev/null 2>&1 && java -version 2>&1 | head -n 1
echo @@pf-disk; df -Pk /var /usr 2>/dev/null | tail -n +2
echo @@pf-python; command -v python3 2>/dev/null
echo @@pf-ss; ss -Hntulp 2>/dev/null
echo @@pf-nginx; command -v nginx >/dev/null 2>&1 && nginx -v 2>&1 | head -n 1
echo @@pf-selinux; if command -v getenforce >/dev/null 2>&1; then getenforce 2>&1; getsebool httpd_can_network_connect 2>&1; fi
"""


# Sends `name` to the group from the host's own address every 0.2 s and prints each peer heard
# (`heard <name>`) for `seconds`; bounded by its own deadline and by `timeout` around it. Once it
# has heard all `peers`, it goes on sending for GRACE s after the last new one and stops: a peer
# heard is listening already (it joins the group before it sends), so it hears this host in that
# time (five sends) even if its probe started late; a missing peer costs the whole `seconds`.
_MCAST_PY = r"""
import socket, struct, sys, time
group, port, own, name, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], float(sys.argv[5])
peers, GRACE = int(sys.argv[6]), 1.0
r = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
r.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
r.bind((group, port))
r.setsockopt(socket.IPPROTO_IP, socket.IP_ADD_MEMBERSHIP, struct.pack("4s4s", socket.inet_aton(group), socket.inet_aton(own)))
r.settimeout(0.1)
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_UDP)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(own))
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 1)
s.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 0)
heard, end, last, news = set(), time.monotonic() + seconds, 0.0, time.monotonic()
while time.monotonic() < end:
    if len(heard) >= peers and time.monotonic() - news >= GRACE:
        break
    if time.monotonic() - last > 0.2:
        s.sendto(b"tcsession-preflight " + name.encode(), (group, port)); last = time.monotonic()
    try:
        data, src = r.recvfrom(512)
    except socket.timeout:
        continue
    if data.startswith(b"tcsession-preflight "):
        peer = data.split(b" ", 1)[1].decode("ascii", "replace")
        if peer != name and peer not in heard:
            heard.add(peer); news = time.monotonic(); print("heard", peer, src[0], flush=True)
print("done")
"""


def multicast_probe(group: str, port: int, own_address: str, name: str, peers: int, seconds: float = 3.0) -> str:
    """A real multicast send and receive on the cluster's group and port (python3 on the host),
    run on every Tomcat at once: `@@pf-mcast` then `heard <peer> <source>` lines, then `done`;
    at most `seconds`, about 1 s once all `peers` (the other Tomcats probing) were heard."""
    args = " ".join(q(str(a)) for a in (group, int(port), own_address, name, seconds, int(peers)))
    return (f"echo @@pf-mcast; timeout {int(seconds) + 5} python3 -c {q(_MCAST_PY)} {args} 2>&1 | tail -n 50\n")


def files_script(paths: Iterable[str], jar_libs: Iterable[str] = (), jar_globs: Sequence[str] = ()) -> str:
    """`paths`, and every jar matching `jar_globs` in each of `jar_libs` (regular files only,
    whatever their version: planning removes stale ones), read in one go: `@@link <path>
    <target>` or `@@nofile <path>` for each path that is a symlink or no regular file, then
    `@@stat` with a `<size> <mode> <owner>:<group> <path>` line per regular file and `@@blob`
    with their bytes concatenated in that order, in base64 (facts.parse_files splits them by
    size). Three processes whatever the number of files (stat, cat, base64), not two per file:
    the facts are read on every host at every deploy and status."""
    names = " ".join(q(p) for p in paths)
    out = ["set --",
           f"for f in {names}; do if [ -L \"$f\" ]; then echo \"@@link $f $(readlink \"$f\")\"; "
           "elif [ -f \"$f\" ]; then set -- \"$@\" \"$f\"; else echo \"@@nofile $f\"; fi; done" if names else ""]
    dirs = " ".join(q(d) for d in sorted(set(jar_libs)))
    if dirs and jar_globs:
        out.append(f"for d in {dirs}; do for f in \"$d\"/*.jar; do case \"${{f##*/}}\" in {'|'.join(jar_globs)}) "
                   "if [ -f \"$f\" ] && [ ! -L \"$f\" ]; then set -- \"$@\" \"$f\"; fi;; esac; done; done")
    out.append("echo @@stat; [ $# -eq 0 ] || stat -c '%s %a %U:%G %n' -- \"$@\"")
    out.append("echo @@blob; [ $# -eq 0 ] || cat -- \"$@\" | base64 -w0; echo")
    return "\n".join(line for line in out if line) + "\n"


# A member's "tcp://{10, 153, -53, 113}:4000" (MemberImpl: signed bytes) or "tcp://10.153.203.113:4000"
# (StaticMember, a StaticMembershipInterceptor's) as "10.153.203.113:4000": one peer counted once.
_MEMBER_AWK = (r'{ s = substr($0, 7); if (s ~ /^[{]/) { p = s; sub(/.*:/, "", p); h = s; sub(/[}]:.*/, "", h); '
               r'sub(/^[{]/, "", h); n = split(h, a, /, */); o = ""; '
               r'for (i = 1; i <= n; i++) o = o (i > 1 ? "." : "") ((a[i] + 256) % 256); s = o ":" p }; print s }')

# Lines of a running Tomcat's log that status reads: membership, state transfer, MSM's start
# (the real tc7-tc9 managers log " starts initialization..." with no class name before it).
LOG_PATTERNS = ("member added", "[Mm]ember disappeared", "[Mm]ember added", "session state",
                "no members active", "MemcachedSessionService", "starts initialization",
                "finished initialization", "^- (failover )?node ids:", "SEVERE", "tcsession-standin",
                "Failed to decrypt")


def membership_script() -> str:
    """`@@cluster-log`: the lines of LOG_PATTERNS since the running Tomcat started, then its
    errors prefixed `SEVERE ` (Debian's SystemdFormatter puts the level into the journal's
    priority, not the text). One `systemctl show` says which Tomcat unit runs and since when."""
    pattern = "|".join(LOG_PATTERNS)
    return (f"echo @@cluster-log\nsystemctl show -p Id,ActiveState,ActiveEnterTimestamp {' '.join(TOMCAT_UNITS)} "
            "2>/dev/null | {\n"
            "  log() { [ \"$st\" = active ] || return 0\n"
            "    journalctl -u \"$u\" --since \"$since\" --no-pager -o cat 2>/dev/null \\\n"
            f"      | grep -E {q(pattern)} | tail -n 200\n"
            "    journalctl -u \"$u\" --since \"$since\" -p err --no-pager -o cat 2>/dev/null \\\n"
            "      | grep -vE '^[[:space:]]+(at |\\.\\.\\. )' | sed 's/^/SEVERE /' | tail -n 20; }\n"
            "  u= st= since=\n"
            "  while IFS= read -r l; do case \"$l\" in\n"
            "    Id=*) u=${l#Id=};; ActiveState=*) st=${l#ActiveState=};; ActiveEnterTimestamp=*) since=${l#*=};;\n"
            "    '') log; u= st= since=;;\n"
            "  esac; done\n"
            "  log; }\n")


# Each node's `stats`, in a subshell of its own (all at once: an unreachable node costs its own
# wait, not the others'). A subshell prints its node's answer as one line (fields joined by "|":
# one short write, which a pipe does not interleave with another's; a multi-line printf is
# written line by line, and two nodes' lines did interleave in the lab), and one reader turns
# each line back into a `@@memcached` section.
_MEMCACHED_PROBE = r"""{ for n in "$@"; do (
  out="@@memcached $n"
  if exec 3<>"/dev/tcp/${n%:*}/${n##*:}"; then
    printf 'stats\r\nquit\r\n' >&3
    while IFS= read -r -t 2 l <&3; do l=${l%$'\r'}
      case $l in "STAT version "*|"STAT curr_items "*|"STAT curr_connections "*) out="$out|$l";; END) break;; esac
    done
  fi
  echo "$out" ) 2>/dev/null & done; wait; } | while IFS= read -r b; do printf '%s\n' "${b//|/$'\n'}"; done"""


def memcached_probe_script(nodes: Iterable[tuple[str, int]]) -> str:
    """Ask every memcached node for its stats over TCP (bash's /dev/tcp), one
    `@@memcached <address>:<port>` section each (empty when unreachable), from one bash (a
    subshell per node, all bounded by one timeout): not four processes per node, which every
    Tomcat asked of every node (N x N) in `inv status`."""
    names = " ".join(q(f"{address}:{int(port)}") for address, port in nodes)
    return f"timeout 5 bash -c {q(_MEMCACHED_PROBE)} _ {names}\n" if names else ""


def app_http_script(address: str, port: int, contexts: Iterable[str]) -> str:
    """Each application's HTTP status on this node: `@@app-http <context>` then the code."""
    return "".join(f"echo '@@app-http {c}'; curl -s -o /dev/null -m 5 -w '%{{http_code}}\\n' "
                   f"{q(f'http://{address}:{int(port)}{c}/')} || echo\n" for c in contexts)


def listeners_script() -> str:
    return "ss -Hntl; echo @@udp; ss -Hnul\n"


def history_script() -> str:
    """Every deploy directory: `@@deploy <name> applied|rolled-back`, its manifest in base64,
    then `@@dirs <name>` and the directories it created."""
    return (f"for d in {state.DEPLOYS}/*/; do [ -d \"$d\" ] || continue; d=${{d%/}}; id=${{d##*/}}; "
            "echo \"@@deploy $id $([ -e \"$d/rolled-back\" ] && echo rolled-back || echo applied)\"; "
            "base64 -w0 \"$d/manifest.json\" 2>/dev/null; echo; "
            "echo \"@@dirs $id\"; cat \"$d/created-dirs\" 2>/dev/null || true; done\n")


# --------------------------------------------------------------------------- changes


APT_LOCK_WAIT = 120  # seconds apt-get waits for another apt/dpkg run to finish


def install_script(package_manager: str, packages: Sequence[str], stop: Sequence[str] = ()) -> str:
    """Install packages; the lists are refreshed only when the install cannot be done from what
    is there. The log goes to a root-only temporary file in the state directory, shown on failure.
    `stop`: units stopped once installed (a package that started its service)."""
    pkgs = " ".join(q(p) for p in packages)
    setup = (f"mkdir -p {state.STATE_DIR} && chmod 700 {state.STATE_DIR} && "
             f"log=$(mktemp {state.STATE_DIR}/install-log.XXXXXX) || exit 1\n")
    if package_manager == "apt-get":
        # the dpkg lock may be held for a while by apt's own daily timers or unattended-upgrades
        # (a fresh host's first minutes, a lab host too): wait for it rather than fail at once
        wait = f"-o DPkg::Lock::Timeout={APT_LOCK_WAIT}"
        base = f"DEBIAN_FRONTEND=noninteractive apt-get install {wait} -y -q --no-install-recommends {pkgs}"
        body = (f"{{ {base} >\"$log\" 2>&1 || {{ apt-get update {wait} -q >>\"$log\" 2>&1; "
                f"{base} >>\"$log\" 2>&1; }}; }}")
    elif package_manager in ("dnf", "yum"):
        body = f"{package_manager} install -y -q {pkgs} >\"$log\" 2>&1"
    else:
        raise ValueError(f"no supported package manager: {package_manager!r}")
    stops = "".join(f"systemctl stop {q(u)} 2>/dev/null || true\n" for u in stop)
    return (setup + f"if {body}; then rm -f \"$log\"; else tail -n 5 \"$log\" >&2; rm -f \"$log\"; exit 1; fi\n"
            + stops)


def packages_script(pattern: str, units: Sequence[str], pending: bool = False) -> str:
    """The cluster's packages on a host (`pattern`: an awk ERE on package names) for `upgrade` and
    `status`: each installed one with its version and install time, what the sources offer for it
    (apt-cache policy: the candidate and every version with its origin), and for each of `units`
    that runs its main PID, the seconds it has run and the deleted files it still maps or holds
    open (code replaced under it: a restart owed). `pending`: every pending upgrade of the host too
    (`apt-get -s upgrade`, nothing changed). apt hosts; on others the sections stay empty."""
    units_q = " ".join(q(u) for u in units)
    listing = ("apt-get -s -o Debug::NoLocking=1 upgrade 2>/dev/null | grep '^Inst ' || true"
               if pending else "true")
    return rf"""export LC_ALL=C
echo @@pkg-installed
if command -v dpkg-query >/dev/null 2>&1; then
  names=$(dpkg-query -W -f='${{Package}} ${{Version}} ${{db:Status-Abbrev}}\n' 2>/dev/null | awk -v re={q(pattern)} '$3 ~ /^ii/ && $1 ~ re {{print $1 " " $2}}')
  echo "$names" | while read -r p v; do [ -n "$p" ] || continue
    t=$(stat -c %Y /var/lib/dpkg/info/"$p".list /var/lib/dpkg/info/"$p":*.list 2>/dev/null | head -n 1)
    echo "$p $v ${{t:-0}}"; done
  echo @@pkg-policy
  [ -z "$names" ] || apt-cache policy $(echo "$names" | cut -d' ' -f1) 2>/dev/null
  echo @@pkg-pending
  {listing}
fi
echo @@svc-runs
now=$(date +%s)
# one systemctl for every unit (4.5 ms each otherwise): its blocks come in the order asked
systemctl show -p MainPID {units_q} 2>/dev/null | awk -v want={q(" ".join(units))} \
  'BEGIN {{ RS = ""; split(want, w, " ") }} {{ split($0, a, "="); if (a[2] + 0 > 0) print w[NR], a[2] + 0 }}' |
while read -r u pid; do
  age=$(ps -o etimes= -p "$pid" 2>/dev/null | tr -d ' ')
  echo "$u $pid ${{age:-0}} $now"
  {{ awk '$NF == "(deleted)" {{print $(NF-1)}}' /proc/"$pid"/maps 2>/dev/null
     ls -l /proc/"$pid"/fd 2>/dev/null | awk '$NF == "(deleted)" {{print $(NF-1)}}'; }} \
    | grep -E '\.(so(\.[0-9]+)*|jar)$' | grep -v -e '^/tmp/' -e '^/dev/shm/' | sort -u | head -n 5 | sed 's/^/  /'
done
"""


def upgrade_packages(package_manager: str, targets: Sequence[tuple[str, str]]) -> str:
    """Install exactly these versions ((name, version): an upgrade or a downgrade), keeping every
    configuration file as it is (tcsession's edits of server.xml and the operator's: dpkg's and
    ucf's questions answered "keep yours"). The package's own scripts may restart its service."""
    if package_manager != "apt-get":
        raise ValueError(f"upgrade supports apt-get hosts, not {package_manager!r}")
    pkgs = " ".join(q(f"{n}={v}") for n, v in targets)
    return (f"mkdir -p {state.STATE_DIR} && chmod 700 {state.STATE_DIR} && "
            f"log=$(mktemp {state.STATE_DIR}/install-log.XXXXXX) || exit 1\n"
            f"if DEBIAN_FRONTEND=noninteractive UCF_FORCE_CONFFOLD=1 apt-get install -o DPkg::Lock::Timeout={APT_LOCK_WAIT} "
            "-o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold -y -q --no-install-recommends "
            f"--allow-downgrades {pkgs} >\"$log\" 2>&1; then rm -f \"$log\"; "
            "else tail -n 5 \"$log\"; rm -f \"$log\"; exit 1; fi\n")


def main_pid(unit: str) -> str:
    return f"systemctl show -p MainPID {q(unit)} 2>/dev/null | cut -d= -f2"


def upgrade_service(unit: str, package_manager: str, targets: Sequence[tuple[str, str]], port: tuple[str, int] | None,
                    timeout: float = 60.0) -> str:
    """Upgrade (or downgrade) a service's packages and make sure it then runs the new code: the
    package's scripts restart it on Debian; if its main PID did not change, it is restarted here.
    Then wait until it is active (and, with `port`, listening on it)."""
    lines = [f"pid0=$({main_pid(unit)})"]
    if targets:
        lines.append(upgrade_packages(package_manager, targets).rstrip("\n"))
    lines.append(running_new_code(unit, "pid0", port, "pid:", timeout))
    return "\n".join(lines) + "\n"


def running_new_code(unit: str, pid_var: str, port: tuple[str, int] | None, label: str, timeout: float = 60.0) -> str:
    """After a package install: `unit` restarted unless its package's scripts did (its main PID,
    saved in $`pid_var` before the install, changed and it runs), then waited for until active
    (and, with `port` (address or "*", port), listening), at most `timeout` s; prints
    `<label> <pid before> -> <pid now>`."""
    u = q(unit)
    tries = int(timeout / 0.25)
    wait = f"systemctl is-active -q {u}"
    if port:
        addr, p = port
        want = f"[.:]{int(p)}" if addr == "*" else re.escape(f"{addr}:{int(p)}")
        wait += f" && ss -Hntl 2>/dev/null | awk '{{print $4}}' | grep -Eq {q(f'{want}$')}"
    return "\n".join([
        f"now=$({main_pid(unit)}); if [ \"${pid_var}\" = \"$now\" ] || [ \"$now\" = 0 ]; then "
        f"systemctl restart {u} " + _or_fail(f"{unit} did not restart", unit) + "; fi",
        f"i=0; until {wait}; do i=$((i+1)); [ $i -lt {tries} ] || {{ echo {q(f'{unit} not serving after {timeout:g} s')}; "
        f"{log_tail(unit)}; exit 1; }}; sleep 0.25; done",
        f"echo \"{label} ${pid_var} -> $({main_pid(unit)})\""])


def record_script(deploy_id: str, manifest_json: str) -> str:
    """The deploy's directory (root-only) and its manifest, written atomically."""
    ddir = state.deploy_dir(deploy_id)
    return (f"set -e\numask 077\nmkdir -p {ddir}/files\nchmod 700 {state.STATE_DIR} {state.DEPLOYS} {ddir}\n"
            f"printf %s {q(manifest_json)} > {ddir}/manifest.json.tmp && mv -f {ddir}/manifest.json.tmp {ddir}/manifest.json\n")


def put_file(path: str, data: bytes, owner: str, mode: str) -> str:
    """Write a file atomically (a temporary file beside it, then mv) with its owner and mode."""
    f, fill = q(path), write_bytes('"$tmp"', data)
    return (f"tmp=$(mktemp {q(path + '.tcsession.')}XXXXXX) && {fill} && "
            f"chown {q(owner)} \"$tmp\" && chmod {q(mode)} \"$tmp\" && mv -f \"$tmp\" {f} "
            "|| { rm -f \"$tmp\"; exit 1; }")


def write_files_script(deploy_id: str, manifest_json: str, saves: Sequence[tuple[int, bytes]],
                       writes: Sequence[tuple[str, bytes | None, str, str]], later: Sequence[str] = ()) -> str:
    """Save the prior bytes and the manifest first, then every file atomically.
    saves: (index, prior bytes); writes: (path, new bytes or None to remove, owner, mode);
    later: files written later (during the node's restart) whose missing directories are made
    now, so that they are recorded with the deploy's and removed by its rollback."""
    ddir = state.deploy_dir(deploy_id)
    lines = [record_script(deploy_id, manifest_json).rstrip("\n")]
    for i, data in saves:
        lines.append(write_bytes(state.saved_path(deploy_id, i), data))
    lines.append("umask 022")  # directories made for the files must be readable by the service
    for path in later:
        parent = q(path.rsplit("/", 1)[0] or "/")
        lines.append(f"[ -d {parent} ] || {{ mkdir -p {parent} && echo {parent} >> {ddir}/created-dirs; }}")
    for path, data, owner, mode in writes:
        if data is None:
            lines.append(f"rm -f {q(path)}")
            continue
        parent = q(path.rsplit("/", 1)[0] or "/")
        lines.append(f"[ -d {parent} ] || {{ mkdir -p {parent} && echo {parent} >> {ddir}/created-dirs; }}")
        lines.append(put_file(path, data, owner, mode))
    return "\n".join(lines) + "\n"


def restore_files_script(deploy_id: str, items: Sequence[tuple[str, bytes | None, str, str, str | None, bool]],
                         created_dirs: Sequence[str], mark: bool = True, first_index: int = 0) -> str:
    """Put a deploy's files back; mark it rolled back (with `mark`). items: (path, bytes or None
    to remove, owner, mode, symlink target or None, keep the current bytes first (someone's
    edit)), kept as overwritten/<first_index + n>."""
    ddir = state.deploy_dir(deploy_id)
    lines = ["set -e", "umask 077", f"mkdir -p {ddir}/overwritten"]
    for i, (path, data, owner, mode, link, keep) in enumerate(items, first_index):
        f = q(path)
        if keep:
            lines.append(f"[ ! -f {f} ] || cp -p {f} {ddir}/overwritten/{i}")
        if link is not None:
            lines.append(f"rm -f {f} && ln -s {q(link)} {f}")
        elif data is None:
            lines.append(f"rm -f {f}")
        else:
            lines.append(put_file(path, data, owner, mode))
    for d in sorted(created_dirs, key=len, reverse=True):
        lines.append(f"rmdir {q(d)} 2>/dev/null || true")
    if mark:
        lines.append(f"date -u +%FT%TZ > {ddir}/rolled-back")
    return "\n".join(lines) + "\n"


def stamp(unit: str, digest: str) -> str:
    return f"mkdir -p {state.APPLIED_DIR} && echo {q(digest)} > {q(state.applied_path(unit))}"


def log_tail(unit: str, lines: int = 5) -> str:
    """The unit's last log lines, each prefixed `log: ` (systemd's container noise and Java stack
    frames left out)."""
    return (f"journalctl -u {q(unit)} -n 400 --no-pager -o cat 2>/dev/null | grep -v -e 'Failed to kill control group' "
            f"-e 'Failed to dump process list' -e '^\\s*at ' -e '^\\s*\\.\\.\\. [0-9]* more' | tail -n {int(lines)} "
            "| sed 's/^/log: /'")


def app_log(unit: str, context: str) -> str:
    """Why an application did not start: the unit's error lines since `$since` (Debian's journal
    carries the level as priority), then its lines naming the context, each prefixed `log: `."""
    since = f"journalctl -u {q(unit)} --since @$((since-1)) --no-pager -o cat 2>/dev/null"
    return (f"{{ {since} -p err | grep -v -e '^\\s*at ' -e '^\\s*\\.\\.\\. [0-9]* more' | tail -n 3; "
            f"{since} | grep -F {q('[' + context + ']')} | tail -n 2; }} | awk '!seen[$0]++' | sed 's/^/log: /'")


def _or_fail(what: str, unit: str) -> str:
    return f"|| {{ echo {q(what)}; {log_tail(unit)}; exit 1; }}"


def enabled(unit: str) -> str:
    """Enable a unit unless it is: `systemctl enable` of an enabled unit still takes about 80 ms
    (measured on the lab), `is-enabled` 5 ms; it is in every Tomcat restart."""
    return f"{{ systemctl is-enabled -q {unit} || systemctl enable -q {unit}; }}"


def restart_service(unit: str, digest: str, enable: bool) -> str:
    return ((f"{enabled(q(unit))} && " if enable else "") + f"systemctl restart {q(unit)} "
            + _or_fail(f"{unit} did not restart", unit) + "\n" + stamp(unit, digest) + "\n")


def firewall_apply() -> str:
    """Load tcsession's rules (replacing its table in one transaction) and enable the unit that
    loads them at boot; then check the table is there."""
    from tcsession import firewall

    unit = q(firewall.UNIT)
    return (f"systemctl daemon-reload && systemctl enable -q {unit} "
            + _or_fail(f"{firewall.UNIT} could not be enabled", firewall.UNIT) + "\n"
            f"out=$(nft -f {q(firewall.RULES)} 2>&1) || {{ echo \"nft -f {firewall.RULES} failed: $out\"; exit 1; }}\n"
            f"systemctl start {unit} " + _or_fail(f"{firewall.UNIT} did not start", firewall.UNIT) + "\n"
            f"nft list table {firewall.TABLE} >/dev/null || {{ echo 'table {firewall.TABLE} missing after loading'; exit 1; }}\n")


def firewall_remove() -> str:
    """Delete tcsession's table and forget its unit (whose file a rollback or a deploy with
    `[firewall] backend = "none"` removed just before)."""
    from tcsession import firewall

    unit = q(firewall.UNIT)
    return (f"systemctl disable -q {unit} 2>/dev/null; systemctl stop {unit} 2>/dev/null; "
            f"nft delete table {firewall.TABLE} 2>/dev/null; systemctl daemon-reload; systemctl reset-failed {unit} 2>/dev/null\n"
            f"if nft list table {firewall.TABLE} >/dev/null 2>&1; then echo 'table {firewall.TABLE} still there'; exit 1; fi\n")


def stop_service(unit: str) -> str:
    """Stop and disable a unit, and forget the configuration it ran with."""
    return f"systemctl disable -q --now {q(unit)} || true; rm -f {q(state.applied_path(unit))}\n"


def nginx_reload_settled(drain_timeout: int = 10) -> tuple[str, str]:
    """Before and after `systemctl reload nginx`: the reload returns once nginx was signalled,
    while the old workers go on serving with the old configuration; the second part waits until
    every old worker has exited, so that what follows (a node restarted) meets only the new
    configuration. nginx ends them `drain_timeout` s after the reload (its worker_shutdown_timeout,
    tcsession.nginx.render_main); the wait gives up 2 s later with a note."""
    per_second = 50  # polls (every 0.02 s): the old workers of an idle nginx are gone in ms
    tries = (int(drain_timeout) + 2) * per_second
    before = "old=$(pgrep -f '^nginx: worker process' | tr '\\n' ' ')"
    after = ("i=0; while :; do alive=''; for p in $old; do kill -0 $p 2>/dev/null && alive=\"$alive $p\"; done; "
             "old=$alive; [ -z \"$old\" ] && break; i=$((i+1)); "
             f"[ $i -lt {tries} ] || {{ echo \"note: nginx workers $old still finishing old requests after "
             f"{tries // per_second} s\"; break; }}; "
             f"sleep {1 / per_second:g}; done")
    return before, after


def nginx_apply(digest: str, start: bool, drain_timeout: int = 10) -> str:
    """Check the configuration, then reload (or, when nginx is not running, enable and start)."""
    action = "restart" if start else "reload-or-restart"
    before, after = nginx_reload_settled(drain_timeout)
    return ("out=$(nginx -t 2>&1) || { echo \"nginx -t rejected the configuration: $(echo \"$out\" | head -n 2 | tr '\\n' ' ')\"; exit 1; }\n"
            + before + "\n" + ("systemctl enable -q nginx && " if start else "") + f"systemctl {action} nginx "
            + _or_fail("nginx did not (re)load", "nginx") + "\n" + after + "\n" + stamp("nginx", digest) + "\n")


def nginx_site(path: str, site: bytes, drain_timeout: int = 10) -> str:
    """Replace the site (atomically), check it, reload nginx: a node drained or back in service."""
    before, after = nginx_reload_settled(drain_timeout)
    return (put_file(path, site, "root:root", "644") + "\nout=$(nginx -t 2>&1) || { echo \"nginx -t: $out\"; exit 1; }\n"
            + before + "\nsystemctl reload nginx || { echo 'nginx did not reload'; exit 1; }\n" + after + "\n")


def restart_tomcat(unit: str, address: str, port: int, path: str, any_status: bool, timeout: float,
                   digest: str, state_lines: bool, writes: Sequence[tuple[str, bytes | None, str, str]] = (),
                   clear: Sequence[str] = (), app_contexts: Sequence[str] = (), members: int = 0,
                   install: str = "", also: Sequence[tuple[str, tuple[str, int] | None]] = ()) -> str:
    """Restart, wait until `path` answers 200 (or any HTTP status), at most `timeout` s (giving up
    at once if the unit stops: a failed start), stamp the configuration it runs with; with
    `state_lines`, print `state: ...` lines about the session state transfer it logged; with
    `members`, then wait (within the same `timeout`) until its log since the restart names that
    many distinct cluster members added (`Replication member added`), and print `members: N`.

    `writes` (path, bytes or None to remove, owner, mode): the files a running Tomcat watches
    (applications, web.xml, context descriptors), put in place while the unit is stopped (with
    `clear`: what Tomcat derived from the old WAR, removed), so that Tomcat's autoDeploy never
    redeploys them on a running node; `app_contexts`: each must answer on the node (not 404, not
    5xx) once it serves, printed `app: <context> HTTP <code>`; one that does not is a failed step,
    and the node is stopped (nginx then sends its sessions to the other nodes, which still run the
    previous version) rather than serving the broken one.

    `install`: a package upgrade's script (`upgrade_packages`), run while the unit is stopped; the
    package's own scripts may start it again, so it is then started only if it is not running.
    `also` (unit, port or None): services of this host restarted while it is stopped (memcached, in
    msm: the Tomcat then starts with connections to the new one), by their package's scripts or,
    if their PID did not change, here; each then active (and listening on its port)."""
    ok = '[ "$c" != 000 ]' if any_status else '[ "$c" = 200 ]'
    url = q(f"http://{address}:{int(port)}{path}")
    poll = 0.1  # seconds between the checks (a start ends between two of them: on average poll/2 waited)
    tries = int(timeout / poll)
    u = q(unit)
    lines = []
    if writes or install or also:
        lines.append(f"systemctl stop {u} " + _or_fail(f"{unit} did not stop", unit))
        for p, data, owner, mode in writes:
            parent = q(p.rsplit("/", 1)[0] or "/")
            lines.append(f"rm -f {q(p)}" if data is None else f"mkdir -p {parent} && " + put_file(p, data, owner, mode))
        for d in clear:
            lines.append(f"rm -rf {q(d)}")
    for i, (other, _) in enumerate(also):
        lines.append(f"p{i}=$({main_pid(other)})")
    lines.append("since=$(date +%s); echo \"since: $since\"")
    if install:
        lines.append(install.rstrip("\n"))
    for i, (other, port) in enumerate(also):
        lines.append(running_new_code(other, f"p{i}", port, f"also: {other}"))
    start = (f"{{ systemctl is-active -q {u} || systemctl start {u}; }}" if install or also
             else f"systemctl restart {u}")
    lines += [
        f"{enabled(u)} && {start} " + _or_fail(f"{unit} did not restart", unit),
        f"i=0; while :; do systemctl is-active -q {u} || {{ echo {q(f'{unit} stopped while starting')}; "
        f"{log_tail(unit)}; exit 1; }}; "
        f"c=$(curl -s -o /dev/null -m 2 -w '%{{http_code}}' {url} || true); {ok} && break; "
        f"i=$((i+1)); [ $i -lt {tries} ] || {{ echo \"{path} answered ${{c:-nothing}} after {timeout:g} s\"; "
        f"{log_tail(unit)}; exit 1; }}; sleep {poll:g}; done",
    ]
    if members:
        lines.append(
            f"while :; do m=$(journalctl -u {u} --since @$((since-1)) --no-pager -o cat 2>/dev/null "
            "| grep -oE 'member added.*tcp://(\\{[-0-9, ]*\\}|[0-9.]+):[0-9]+' | grep -oE 'tcp://(\\{[-0-9, ]*\\}|[0-9.]+):[0-9]+' "
            f"| awk {q(_MEMBER_AWK)} | sort -u | wc -l); "
            f"[ \"$m\" -ge {int(members)} ] && break; "
            f"i=$((i+1)); [ $i -lt {tries} ] || {{ echo \"sees $m of {int(members)} cluster members after {timeout:g} s (a peer down or unreachable, or on another membership?)\"; "
            f"{log_tail(unit)}; exit 1; }}; sleep {poll:g}; done; echo \"members: $m\"")
    for ctx in app_contexts:
        app_url = q(f"http://{address}:{int(port)}{ctx}/")
        lines.append(f"c=$(curl -s -o /dev/null -m 20 -w '%{{http_code}}' {app_url} || true); case \"$c\" in "
                     f"000|404|5*) logs=$({app_log(unit, ctx)}); systemctl stop {u}; echo \"stopped {unit}: nginx "
                     f"sends its sessions to the other nodes, which keep the previous version\"; echo \"{ctx} "
                     f"answered ${{c:-nothing}} after the start (the application did not come up)\"; "
                     f"echo \"$logs\"; exit 1;; esac; echo \"app: {ctx} HTTP $c\"")
    lines.append(stamp(unit, digest))
    if state_lines:
        lines.append(f"journalctl -u {u} --since @$((since-1)) --no-pager -o cat 2>/dev/null "
                     "| grep -i -e 'session state' -e 'no members active' -e 'no matching context manager' "
                     "| sed 's/^/state: /' | tail -n 10 || true")
    lines.append(log_gate(unit))
    return "\n".join(lines) + "\n"


# sessions = "drop": how many sessions a running Tomcat holds per context, asked of the JVM itself
# (the JDK's attach API starts its local JMX agent, reachable only by its own user; Tomcat's Manager
# MBean says activeSessions), run with the Tomcat's own java as the Tomcat's user.
COUNT_SESSIONS_JAVA = """import com.sun.tools.attach.VirtualMachine;
import javax.management.MBeanServerConnection;
import javax.management.ObjectName;
import javax.management.remote.JMXConnector;
import javax.management.remote.JMXConnectorFactory;
import javax.management.remote.JMXServiceURL;

public class CountSessions {
    public static void main(String[] args) throws Exception {
        VirtualMachine vm = VirtualMachine.attach(args[0]);
        String url;
        try { url = vm.startLocalManagementAgent(); } finally { vm.detach(); }
        try (JMXConnector c = JMXConnectorFactory.connect(new JMXServiceURL(url))) {
            MBeanServerConnection s = c.getMBeanServerConnection();
            for (int i = 1; i < args.length; i++) {
                ObjectName n = new ObjectName("Catalina:type=Manager,host=localhost,context=" + args[i]);
                Object v = s.isRegistered(n) ? s.getAttribute(n, "activeSessions") : "none";
                System.out.println("sessions: " + args[i] + " " + v);
            }
        }
    }
}
"""

_MEMCACHED_KEYS = r"""n=$1; if exec 3<>"/dev/tcp/${n%:*}/${n##*:}"; then
  printf 'lru_crawler metadump all\r\n' >&3; total=0
  while IFS= read -r -t 5 l <&3; do l=${l%$'\r'}
    case $l in END) break;; "key="*) k=${l#key=}; k=${k%% *}
      case $k in validity%3A*|bak%3A*|lock%3A*|validity:*|bak:*|lock:*) ;; *) total=$((total+1));; esac;; esac
  done; printf 'quit\r\n' >&3; echo "memcached-sessions: $n $total"; else echo "memcached-sessions: $n unreachable"; fi"""


def count_sessions(unit: str, contexts: Sequence[str], memcached: tuple[str, int] | None = None) -> str:
    """`sessions: <context> <n>` per context of the running Tomcat (`sessions: not running`, or
    `sessions: unknown <why>`); with `memcached` (msm), `memcached-sessions: <node> <n>`: the
    sessions stored in this host's memcached node (msm's keys, not its validity/backup/lock ones)."""
    u = q(unit)
    # Inside the Tomcat's mount namespace (Debian's unit has PrivateTmp: the JVM's attach socket is
    # in its own /tmp, where JDK 17's attach client does not look from outside).
    inner = ("d=$(mktemp -d /tmp/tcsession-count.XXXXXXXX) && chmod 755 \"$d\" && cat > \"$d/CountSessions.java\" "
             "&& chmod 644 \"$d/CountSessions.java\" && cd \"$d\" && runuser -u \"$1\" -- \"$2\" "
             "-XX:TieredStopAtLevel=1 CountSessions.java \"$3\" " + " ".join(q(c) for c in contexts)
             + "; rc=$?; cd /; rm -rf \"$d\"; exit $rc")
    lines = [
        f"pid=$(systemctl show -p MainPID --value {u})",
        "if [ -z \"$pid\" ] || [ \"$pid\" = 0 ]; then echo 'sessions: not running'; else",
        "user=$(stat -c %U /proc/$pid); jbin=$(readlink -f /proc/$pid/exe)",
        f"out=$(printf %s {q(COUNT_SESSIONS_JAVA)} | timeout 90 nsenter -t \"$pid\" -m -- sh -c {q(inner)} _ "
        "\"$user\" \"$jbin\" \"$pid\" 2>&1); rc=$?",
        "if [ $rc = 0 ]; then printf '%s\\n' \"$out\" | grep '^sessions: '; else "
        "echo \"sessions: unknown $(printf '%s' \"$out\" | grep -v '^[[:space:]]*at ' | tail -n 2 | tr '\\n' ' ')\"; fi",
        "fi",
    ]
    if memcached:
        lines.append(f"timeout 20 bash -c {q(_MEMCACHED_KEYS)} _ {q(f'{memcached[0]}:{int(memcached[1])}')} || true")
    return "\n".join(lines) + "\n"


# What the log gate after a restart looks at (tcsession.steps.judge_log_gate decides): these
# lines of the restarted run, and its error-priority lines prefixed `SEVERE ` (Debian's
# SystemdFormatter puts the level into the journal's priority, not the text).
GATE_GREP = ("Unable to serialize delta request", "No session state sen[dt] at", "[Ff]ailed to decrypt",
             "NoClassDefFoundError", "NotSerializableException",
             "Cannot serialize session attribute", "InvalidClassException", "while loading persisted sessions",
             "Unable to receive message through TCP channel", "deserialize MapMessage", "Unable to apply diff to key",
             "Could not deserialize session", "Could not load session with id", "SEVERE")


def log_gate(unit: str, since: int | None = None) -> str:
    """`gate: <line>` for every line of GATE_GREP the unit's current run logged (its invocation
    only: the stopped run's shutdown lines are not its), at most 40, stack frames left out;
    with `since` (epoch seconds, a peer's gate), only what it logged from then on."""
    u = q(unit)
    sel = f"_SYSTEMD_INVOCATION_ID=\"$inv\"" + (f" --since @{int(since)}" if since is not None else "")
    frames = "grep -vE '^[[:space:]]+(at |\\.\\.\\. )'"
    return (f"inv=$(systemctl show -p InvocationID --value {u}); if [ -n \"$inv\" ]; then "
            f"{{ journalctl {sel} --no-pager -o cat 2>/dev/null | grep -E {q('|'.join(GATE_GREP))}; "
            f"journalctl {sel} -p err --no-pager -o cat 2>/dev/null | {frames} | sed 's/^/SEVERE /'; }} "
            "| head -n 40 | sed 's/^/gate: /'; fi; true")


# --------------------------------------------------------------------------- transport pieces


def make_temp_file() -> str:
    return "umask 077 && mktemp /tmp/tcsession.XXXXXXXX"


def append_to(path: str, text: str) -> str:
    return f"printf %s {q(text)} >> {q(path)}"


def run_file(path: str, has_stdin: bool) -> str:
    return f"sh {q(path)}{'' if has_stdin else ' </dev/null'}; rc=$?; rm -f {q(path)}; exit $rc"


def remove(path: str) -> str:
    return f"rm -f {q(path)}"


def sudo(command: str, nopasswd: bool = False) -> str:
    """The command as root through sudo: the password read from standard input (-S, no prompt
    shown; -k so that sudo always reads it, a cached credential never leaving it to the command),
    or with -n (never asks: fails at once where sudoers wants a password) for NOPASSWD users."""
    if nopasswd:
        return "sudo -n sh -c " + q(command)
    return "sudo -k -S -p '' sh -c " + q(command)


def step_frame(index: int, body: str) -> str:
    """One step of a batched script: a `@@step N` header, the step in a subshell (its stderr
    joined to stdout), and on failure `@@failed N` and the end of the script."""
    return f"echo '@@step {index}'\n(\n{body.rstrip()}\n) 2>&1 || {{ rc=$?; echo '@@failed {index}'; exit $rc; }}\n"


# --------------------------------------------------------------------------- lab (inside containers)


def lab_build_hooks() -> list[str]:
    """mmdebstrap customize hooks ("$1" is the new root)."""
    return [
        # Each host gets its own SSH host key; none is shared through the base.
        'rm -f "$1"/etc/ssh/ssh_host_*',
        # Static addresses come from systemd-networkd (a per-host .network file).
        'chroot "$1" systemctl enable systemd-networkd.service systemd-networkd.socket',
        # Never wait for a network that is "online" (there is no default route).
        'chroot "$1" systemctl mask systemd-networkd-wait-online.service',
        'echo "" > "$1"/etc/machine-id',
    ]


def failed_units_report() -> str:
    return ("systemctl --failed --no-legend; for u in $(systemctl --failed --no-legend --plain | awk '{print $1}'); "
            "do systemctl status --no-pager -l $u 2>&1 | tail -15; done")


def wait_system_running() -> str:
    return "systemctl is-system-running --wait"

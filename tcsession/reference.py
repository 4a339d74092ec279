"""The inventory's reference, from the key tables tcsession.inventory checks with: each table and
key described once here, and from that one source the JSON Schema (shipped as
tcsession/inventory.schema.json, printed by `tcsession check --schema`), the key reference in
docs/inventory.md, and the effective inventory `tcsession check` prints. Pure code.

tests/test_reference.py checks that every key of every table is described, that the shipped
schema and the committed doc are what this module generates (`python -m tcsession.reference
--write` rewrites both), and that the schema agrees with the parser on real files.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from pathlib import Path
from typing import Any

from tcsession import inventory as I

SCHEMA_ID = "tcsession.inventory/1"
SCHEMA_FILE = Path(__file__).with_name("inventory.schema.json")
DOC_FILE = Path(__file__).resolve().parent.parent / "docs" / "inventory.md"
BEGIN, END = "<!-- generated: tcsession.reference (python -m tcsession.reference --write) -->", "<!-- end generated -->"


@dataclasses.dataclass(frozen=True)
class Table:
    name: str  # as written in the file: "ssh", "tomcat.NAME"
    spec: dict[str, I._Key]
    doc: str
    keys: dict[str, str]  # key -> what it means


SSH_DOCS = {
    "user": "the login user on the hosts; not root needs `sudo = true`",
    "port": "the SSH port",
    "key": "a private key file on this machine (relative to the inventory file; `~` expanded); must exist, "
           "readable by its owner only, unencrypted unless `agent = true`",
    "agent": "use ssh-agent's keys (an encrypted key must be loaded into the agent)",
    "known_hosts": "the known_hosts file every host key is checked against (tcsession never adds a key)",
    "sudo": "run commands with sudo; default: true when `user` is not root. The password comes from "
            "TCSESSION_SUDO_PASSWORD or a prompt, never from this file",
    "sudo_nopasswd": "sudoers lets the user run sudo without a password (NOPASSWD): `sudo -n`, no password "
                     "asked or sent",
    "jump": 'jump host(s) to reach the hosts through, `"[user@]host[:port],..."` as ssh\'s -J (each one\'s '
            'key checked against `known_hosts` too); `"none"`: none, even if the SSH config names a ProxyJump',
    "connect_timeout": "seconds to wait for an SSH connection",
    "command_timeout": "seconds one remote command may take",
}

TABLES: tuple[Table, ...] = (
    Table("lab", I.LAB_KEYS, "Present only in an inventory of the built-in lab (containers on this machine, "
          "docs/lab.md): the lab provides the SSH key and known_hosts, so `[ssh]` must not set key, agent or "
          "known_hosts, and every address must be inside `subnet`.", {
              "name": "the lab's name (its containers, bridge and state directory are named after it)",
              "release": "the hosts' Debian release: bookworm (Tomcat 10.1) or bullseye (Tomcat 9)",
              "subnet": "the lab's /24 network; .1 is this machine, hosts take .2 to .254",
              "sudo_users": "users the lab makes on every host with password sudo (the password in the lab's "
                            "state directory, root-only)",
              "nopasswd_users": "users the lab makes on every host with NOPASSWD sudo",
              "root_login": "false: the hosts refuse root over SSH (PermitRootLogin no)",
              "jump_host": "a lab host (e.g. \"nginx\") through which alone the other hosts accept SSH",
          }),
    Table("cluster", I.CLUSTER_KEYS, "The cluster as a whole.", {
        "mode": 'the session mode: "delta" (Tomcat\'s own cluster) or "msm" (memcached-session-manager). '
                "`deploy` uses it when no --mode is given; a --mode that differs, or a deploy of the other mode "
                "than the Tomcats run, needs --switch-mode. `preflight` and `status` read it too. Not set: "
                "deploy needs --mode",
    }),
    Table("ssh", {**I.SSH_KEYS, **I.SSH_RUN_KEYS}, "SSH defaults for every host; a host table may override "
          "any of them except `max_parallel`.", {**SSH_DOCS,
          "max_parallel": "hosts worked on (SSH sessions open) at once; [ssh] only",
          "config": 'the OpenSSH client config to honour (HostName, User, Port, IdentityFile, ProxyJump), '
                    'relative to the inventory; default: TCSESSION_SSH_CONFIG, else ~/.ssh/config when it '
                    'exists (never for the lab); `"none"`: none; [ssh] only'}),
    Table("nginx.NAME", I.NGINX_KEYS, "Exactly one: the load balancer in front of the Tomcats. NAME is the "
          "host's name in tcsession's output (a lowercase letter, then up to 30 lowercase letters, digits or "
          "-). Any `[ssh]` key (but `max_parallel`) may be set here for this host.", {
              "address": "the host's own unicast IPv4 address (names and IPv6 are refused: it goes into "
                         "nginx's upstreams and is compared with what the host listens on)",
              "http_port": "the port nginx serves HTTP on",
              "ssh_host": "where SSH connects when not `address`: a name, an address or a Host alias of the "
                          "SSH config",
          }),
    Table("tomcat.NAME", I.TOMCAT_KEYS, "Two or more: the Tomcats. NAME as for nginx; any `[ssh]` key (but "
          "`max_parallel`) may be set here for this host.", {
              "address": "the host's own unicast IPv4 address (written into server.xml's Receiver, nginx's "
                         "upstreams and MSM's memcachedNodes)",
              "jvm_route": "the Engine's jvmRoute, appended to session ids; default: the table's NAME",
              "memcached": "run a memcached beside this Tomcat (msm mode); it is node n<position>",
              "http_port": "Tomcat's HTTP connector port (nginx proxies to it; bound to `address`)",
              "remove": "take this Tomcat out of the cluster while it serves (out of nginx and the peers' "
                        "lists, its Tomcat stopped); delta mode only; keep the table so tcsession can reach it",
              "ssh_host": "where SSH connects when not `address`: a name, an address or a Host alias of the "
                          "SSH config",
          }),
    Table("delta", I.DELTA_KEYS, 'Tomcat\'s own session replication ("delta" mode): SimpleTcpCluster.', {
        "manager": '"delta": DeltaManager, every node holds every session; "backup": BackupManager, one backup '
                   "copy per session (rolling restarts one node at a time)",
        "membership": '"multicast": McastService; "static": every peer listed on each node (no multicast '
                      "needed, and no membership sleep at start: a restart about 1.9 s faster). Not set: a cluster "
                      "tcsession already runs keeps its kind, a new one gets static; the other kind on a running "
                      "cluster is a switch, refused without --switch-membership (docs/operations.md)",
        "multicast_address": "the membership's multicast group (multicast membership)",
        "multicast_port": "the membership's UDP port (multicast membership)",
        "receiver_port": "the cluster receiver's TCP port, bound to each Tomcat's address",
        "channel_send_options": "how session messages are sent: a combination of 2 (use_ack), 4 (sync) and 8 "
                                '(async), as an integer or names ("sync,use_ack" = 6, synchronous with '
                                "acknowledgement); the asynchronous 8 lost updates in the lab",
        "state_transfer_timeout": "seconds a restarted node waits for the session state from a peer",
        "encrypt": "encrypt replication with Tomcat's EncryptInterceptor (AES/GCM), the key kept beside the "
                   "inventory (docs/security.md)",
        "key_file": "the cluster key file (mode 600, generated on first use); default: beside the "
                    "inventory, named after it (hosts.cluster-key for hosts.toml)",
    }),
    Table("msm", I.MSM_KEYS, 'memcached-session-manager ("msm" mode), docs/modes.md.', {
        "sticky": "sticky sessions (nginx routes by jvmRoute, each Tomcat backs up to memcached); false: "
                  "non-sticky, round robin, MSM's locking",
        "serializer": "the session serializer and its jars: java (nothing more), kryo, javolution",
        "locking_mode": 'non-sticky only: `"all"`, `"auto"`, `"none"` or `"uriPattern:REGEX"`',
        "backup": '"sync": each update stored in memcached before the response; "async": after it (a Tomcat '
                  "lost at once loses that update)",
        "request_uri_ignore_pattern": "requests whose URI matches (a Java regex) do not back up the session",
        "scope": '"app": the Manager in the test application\'s context.xml; "global": in conf/context.xml',
        "memcached_port": "memcached's port, bound to each Tomcat's address",
        "memcached_localhost": "memcached also listens on 127.0.0.1 (never on every address)",
        "maven_repo": "where the jars come from: a Maven repository URL or a local Maven-layout directory "
                      "(relative to the inventory file); each jar checked against its .sha1 and the lock file "
                      "beside the inventory (hosts.msm.lock for hosts.toml)",
        "jakarta": 'Tomcat 10+: "convert" MSM\'s jars with javax2jakarta, "supplied" (jakarta builds in '
                   'maven_repo) or "refuse"',
        "version": "memcached-session-manager's version",
    }),
    Table("rolling", I.ROLLING_KEYS, "Rolling restarts (deploy and rollback) go in waves; never all Tomcats "
          "at once.", {
              "max_unavailable": 'Tomcats out of service at once: a count (1 = one at a time) or a percentage '
                                 'of the Tomcats ("25%", rounded down, at least 1); the mode may allow fewer',
              "drain_timeout": "seconds a drain may take: nginx's worker_shutdown_timeout (old workers close what "
                               "they still hold that long after a reload; long downloads and WebSockets are cut) "
                               "and tcsession's wait for them",
          }),
    Table("app", I.APP_SETTINGS, "The test application, and what `status` checks through nginx. The "
          "`[app.NAME]` tables of your applications sit beside these keys.", {
              "test_page": "deploy tcsession's test page /test.jsp (the lab: true); status follows a session "
                           "through nginx with it",
              "check_path": "without the test page: a path of yours that status requests through nginx "
                            '(passes when every answer is below 400); "": skipped',
              "same_site": 'the session cookie\'s SameSite (a managed CookieProcessor in conf/context.xml, Tomcat '
                           '8.5.42/9.0.21 or newer; "none" needs [tls]); "": Tomcat\'s default, the file untouched',
              "jar_scan": '"all": Tomcat scans every jar at each start for tag libraries, web fragments, '
                          'initializers and annotations (its default); "listed": only the jars of jars_to_scan (a '
                          "managed JarScanner in conf/context.xml, Tomcat 8 or newer): 0.4 s off a restart in the "
                          "lab; what an unlisted jar carries (a tag library, a web fragment, an initializer such as "
                          "Spring's, annotated servlets) is then not found (docs/operations.md)",
              "jars_to_scan": 'with jar_scan = "listed": the jar file names (patterns, * and ?) to scan',
          }),
    Table("app.NAME", I.APP_KEYS, "One of your applications: a WAR rolled out to every Tomcat, node by node "
          "(docs/operations.md).", {
              "war": "the WAR file on this machine (relative to the inventory file)",
              "context": 'its context path; default "/NAME"; "/a/b" becomes a#b.war; "/" is refused',
              "jakarta": 'a javax WAR onto Tomcat 10+: "convert" (javax2jakarta) or "refuse"',
              "sessions": '"keep": refuse a version whose shared Serializable classes changed serialVersionUID '
                          '(the sessions could not be read); "drop": roll it anyway, after each node says how '
                          "many sessions it holds and will lose",
          }),
    Table("firewall", I.FIREWALL_KEYS, "The cluster's ports open only to the hosts that need them.", {
        "backend": '"nftables": a table of tcsession\'s own on each Tomcat host; "none": the hosts\' firewalls '
                   "are left alone",
    }),
    Table("packages", I.PACKAGES_KEYS, "The distribution's automatic upgrades (unattended-upgrades, needrestart, "
          "dnf-automatic) against the cluster's packages (docs/operations.md).", {
        "automatic": '"warn": preflight and status say which automatic upgrader can upgrade or restart the '
                     'cluster\'s services undrained; "hold": files of tcsession\'s own keep the cluster\'s packages '
                     "out of unattended-upgrades and its services out of needrestart's restarts (Debian/Ubuntu; "
                     "the RHEL family is only warned about)",
    }),
    Table("tls", I.TLS_KEYS, "HTTPS at nginx (docs/security.md). Paths are relative to the inventory file; the "
          "key goes to the nginx host only, root-only, and is never shown.", {
              "certificate": "the server's certificate, then its intermediates (PEM)",
              "key": "its private key, unencrypted PEM",
              "server_name": "the name clients use; the certificate must cover it",
              "https_port": "the port nginx serves HTTPS on",
              "redirect_http": "answer plain HTTP with a redirect to https (false: it also serves, for a "
                               "migration)",
              "hsts": "Strict-Transport-Security max-age in seconds; 0: not sent",
              "ca": "what status trusts for the certificate; default: the system's trust store",
          }),
)


def table(name: str) -> Table:
    return next(t for t in TABLES if t.name == name)


# --------------------------------------------------------------------------- JSON Schema


def _default(k: I._Key) -> Any:
    return None if k.default is I.REQUIRED or k.default is None else k.default


def key_schema(k: I._Key, doc: str) -> dict:
    types = {"str": "string", "bool": "boolean", "int": "integer", "number": "number",
             "int|str": ["integer", "string"], "list": "array"}
    s: dict[str, Any] = {"type": types[k.kind], "description": doc}
    if k.kind == "list":
        s["items"] = {"type": "string"}
    if _default(k) is not None and k.default != "":
        s["default"] = k.default
    choices = getattr(k.check, "choices", None)
    if choices:
        s["enum"] = list(choices)
    regex = getattr(k.check, "regex", None)
    if regex:
        s["pattern"] = f"^(?:{regex})$"
    if k.check is I._port:
        s.update(minimum=1, maximum=65535)
    if k.check is I._address:
        s["format"] = "ipv4"
    if k.kind == "str" and not choices:
        s["maxLength"] = k.max_len
    return s


def table_schema(t: Table, extra: dict[str, I._Key] | None = None, open_tables: dict | None = None) -> dict:
    props = {key: key_schema(k, t.keys[key]) for key, k in t.spec.items()}
    for key, k in (extra or {}).items():
        props.setdefault(key, key_schema(k, SSH_DOCS[key] + " (this host's own)"))
    s: dict[str, Any] = {"type": "object", "description": t.doc, "properties": props}
    if open_tables is not None:
        s["additionalProperties"] = open_tables
    else:
        s["additionalProperties"] = False
    required = [key for key, k in t.spec.items() if k.default is I.REQUIRED]
    if required:
        s["required"] = required
    return s


def json_schema() -> dict:
    name = {"type": "string", "pattern": "^[a-z][a-z0-9-]{0,30}$"}
    props: dict[str, Any] = {}
    for t in TABLES:
        if t.name in ("nginx.NAME", "tomcat.NAME"):
            role = t.name.split(".")[0]
            props[role] = {"type": "object", "description": t.doc, "propertyNames": name,
                           "additionalProperties": table_schema(t, I.SSH_KEYS),
                           "minProperties": 1 if role == "nginx" else 2}
            if role == "nginx":
                props[role]["maxProperties"] = 1
        elif t.name == "app":
            props["app"] = table_schema(t, open_tables=table_schema(table("app.NAME")))
        elif t.name != "app.NAME":
            props[t.name] = table_schema(t)
    return {"$schema": "http://json-schema.org/draft-07/schema#", "$id": SCHEMA_ID,
            "title": "tcsession inventory (hosts.toml)",
            "description": "The inventory file tcsession reads (docs/inventory.md). Checked in full by "
                           "`tcsession check`, which also checks what a schema cannot (files that must exist, "
                           "unique addresses, ports that meet on one host).",
            "type": "object", "properties": props, "required": ["nginx", "tomcat"], "additionalProperties": False}


def schema_text() -> str:
    return json.dumps(json_schema(), indent=2) + "\n"


# --------------------------------------------------------------------------- the doc


def _cell(v: Any) -> str:
    return v.replace("|", "\\|") if isinstance(v, str) else str(v)


def _shown_default(t: Table, key: str, k: I._Key) -> str:
    if k.default is I.REQUIRED:
        return "required"
    special = {("tomcat.NAME", "jvm_route"): "the table's NAME", ("app.NAME", "context"): '"/NAME"',
               ("ssh", "sudo"): "true unless user is root", ("ssh", "key"): "none (or agent)",
               ("delta", "key_file"): "`STEM.cluster-key`", ("cluster", "mode"): "not set",
               ("delta", "membership"): "the running cluster's; `\"static\"` for a new one",
               ("tls", "ca"): "the system's"}
    if (t.name, key) in special:
        return special[(t.name, key)]
    return f"`{I._show(k.default)}`"


def markdown() -> str:
    """The key reference of docs/inventory.md, between its generated markers."""
    out = [BEGIN, "", "## Every table and key", "",
           "Generated from the key tables tcsession checks with (`tcsession/reference.py`); the same source "
           "gives the JSON Schema (`tcsession check --schema`).", ""]
    for t in TABLES:
        out += [f"### [{t.name}]", "", t.doc, "", "| key | type | default | meaning |", "|---|---|---|---|"]
        for key, k in t.spec.items():
            kind = {"str": "string", "bool": "boolean", "int": "integer", "number": "number",
                    "int|str": "integer or string", "list": "array of strings"}[k.kind]
            choices = getattr(k.check, "choices", None)
            if choices:
                kind = " \\| ".join(f'`"{c}"`' for c in choices)
            out.append(f"| `{key}` | {kind} | {_cell(_shown_default(t, key, k))} | {_cell(t.keys[key])} |")
        out.append("")
    out.append(END)
    return "\n".join(out) + "\n"


def doc_with_reference(doc: str) -> str:
    """docs/inventory.md with its generated part replaced by markdown() (appended if absent)."""
    if BEGIN in doc and END in doc:
        head, rest = doc.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        return head + markdown().rstrip("\n") + tail
    return doc.rstrip("\n") + "\n\n" + markdown()


# --------------------------------------------------------------------------- the effective inventory


def effective(inv: I.Inventory) -> dict[str, dict[str, Any]]:
    """Every table with every key's effective value (defaults filled in, paths resolved), as
    `tcsession check` shows it; keys with no value (not set, no default) are left out."""
    out: dict[str, dict[str, Any]] = {}
    if inv.lab:
        out["lab"] = {"name": inv.lab.name, "release": inv.lab.release, "subnet": str(inv.lab.subnet),
                      "sudo_users": list(inv.lab.sudo_users), "nopasswd_users": list(inv.lab.nopasswd_users),
                      "root_login": inv.lab.root_login, "jump_host": inv.lab.jump_host or None}
    out["cluster"] = {"mode": inv.mode}
    out["ssh"] = {"max_parallel": inv.max_parallel}
    for h in inv.hosts + inv.removed:
        d: dict[str, Any] = {"address": h.address, "http_port": h.http_port}
        if h.role == "tomcat":
            d |= {"jvm_route": h.jvm_route, "memcached": h.memcached, "remove": h.remove}
        s = h.ssh
        d |= {"user": s.user, "port": s.port, "key": s.key, "agent": s.agent, "known_hosts": s.known_hosts,
              "sudo": s.sudo, "sudo_nopasswd": s.nopasswd, "connect_timeout": s.connect_timeout,
              "command_timeout": s.command_timeout, "ssh_host": s.host or None,
              "jump": ",".join(f"{j.user}@{j.host}:{j.port}" for j in s.jump) or None}
        out[f"{h.role}.{h.name}"] = d
    out["delta"] = dataclasses.asdict(inv.delta)
    out["msm"] = dataclasses.asdict(inv.msm)
    out["rolling"] = {"max_unavailable": inv.rolling.max_unavailable, "drain_timeout": inv.rolling.drain_timeout}
    out["app"] = dataclasses.asdict(inv.app)
    for a in inv.apps:
        out[f"app.{a.name}"] = {"war": a.war, "context": a.context, "jakarta": a.jakarta, "sessions": a.sessions}
    out["firewall"] = {"backend": inv.firewall}
    out["packages"] = {"automatic": inv.automatic}
    if inv.tls:
        out["tls"] = {k: v for k, v in dataclasses.asdict(inv.tls).items()}
    return {name: {k: (str(v) if isinstance(v, Path) else v) for k, v in d.items() if v is not None}
            for name, d in out.items()}


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, str):
        return json.dumps(v)
    return str(v)


def render_effective(eff: dict[str, dict[str, Any]], raw: dict) -> str:
    """The effective inventory as TOML, each value the file did not set marked: "# default", or
    "# from [ssh]" for a host's SSH setting written once in [ssh]."""
    lines: list[str] = []
    for name, values in eff.items():
        parts = name.split(".", 1)
        given = raw.get(parts[0], {}) if isinstance(raw.get(parts[0], {}), dict) else {}
        if len(parts) == 2:
            given = given.get(parts[1], {}) if isinstance(given.get(parts[1], {}), dict) else {}
        ssh = raw.get("ssh", {}) if isinstance(raw.get("ssh"), dict) else {}
        lines.append(f"[{name}]")
        if not values and name != "cluster":
            lines.append("# (nothing set)")
        for key, v in values.items():
            text = f"{key} = {_toml_value(v)}"
            if key not in given:
                host_ssh = len(parts) == 2 and parts[0] in ("nginx", "tomcat") and key in I.SSH_KEYS
                note = "from [ssh]" if host_ssh and key in ssh else "default"
                text = f"{text:<48} # {note}"
            lines.append(text)
        if name == "cluster" and "mode" not in values:
            lines.append("# mode: not set (deploy needs --mode)")
        lines.append("")
    return "\n".join(lines)


def write() -> None:  # pragma: no cover - the maintainer's command
    SCHEMA_FILE.write_text(schema_text())
    DOC_FILE.write_text(doc_with_reference(DOC_FILE.read_text()))
    print(f"wrote {SCHEMA_FILE} and {DOC_FILE}")


if __name__ == "__main__":  # pragma: no cover
    if sys.argv[1:] == ["--write"]:
        write()
    else:
        sys.stdout.write(schema_text())

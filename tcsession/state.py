"""The host-side state tcsession keeps on every host it changes, under /var/lib/tcsession.

One owner for its paths and for the typed record of each deploy (the manifest), used by deploy,
rollback, history and status alike:

    /var/lib/tcsession/                         root-only (700)
        deploys/<id>/manifest.json              what the deploy changed on this host (Manifest)
        deploys/<id>/files/<n>                  the prior bytes of each file it overwrote
        deploys/<id>/created-dirs               directories it created, one a line
        deploys/<id>/overwritten/<n>            bytes a forced rollback overwrote (someone's edit)
        deploys/<id>/rolled-back                written when the deploy was rolled back (UTC time)
        applied/<unit>                          digest of the configuration <unit> last started with
        msm-jars                                the MSM jars tcsession placed ("<sha256>  <path>")

Pure: paths, data and parsers; the shell that reads and writes them is in tcsession.shell.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
import json
import re

STATE_DIR = "/var/lib/tcsession"
DEPLOYS = f"{STATE_DIR}/deploys"
APPLIED_DIR = f"{STATE_DIR}/applied"
JARS_LIST = f"{STATE_DIR}/msm-jars"

# Deploy ids tcsession makes: 20261201T104922Z-1a2b3c. Anything else in deploys/ is not ours.
DEPLOY_ID = re.compile(r"^\d{8}T\d{6}Z-[0-9a-f]{6}$")


def deploy_dir(deploy_id: str) -> str:
    return f"{DEPLOYS}/{deploy_id}"


def saved_path(deploy_id: str, index: int) -> str:
    return f"{deploy_dir(deploy_id)}/files/{index}"


def applied_path(unit: str) -> str:
    """Written after a service was (re)started or reloaded successfully with a configuration:
    a service whose stamp differs from its files was not restarted (a deploy stopped halfway)."""
    return f"{APPLIED_DIR}/{unit}"


@dataclasses.dataclass(frozen=True)
class FileRecord:
    """One file a deploy wrote or removed on a host, and how to put it back."""

    path: str
    existed: bool
    before_sha256: str | None
    after_sha256: str | None
    before_mode: str = ""
    before_owner: str = ""
    before_link: str | None = None  # the file was a symlink to this target
    saved: str | None = None  # the prior bytes, relative to the deploy's directory ("files/3")


@dataclasses.dataclass(frozen=True)
class Manifest:
    """What one deploy did on one host (deploys/<id>/manifest.json)."""

    id: str
    mode: str
    time: str
    packages_installed: tuple[str, ...] = ()
    services_before: tuple[tuple[str, str], ...] = ()  # (unit, ActiveState) before the deploy
    files: tuple[FileRecord, ...] = ()
    kind: str = "deploy"  # "deploy" | "upgrade" (tcsession upgrade: packages, no files)
    # an upgrade's packages: (name, version before, version after)
    packages_changed: tuple[tuple[str, str, str], ...] = ()

    def was_active(self, unit: str) -> bool:
        return dict(self.services_before).get(unit) == "active"

    def service_before(self, unit: str) -> str:
        return dict(self.services_before).get(unit, "")

    def to_json(self) -> str:
        d = dataclasses.asdict(self)
        d["services_before"] = dict(self.services_before)
        return json.dumps(d, indent=1, sort_keys=True)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        """Raises ValueError on anything that is not a manifest tcsession wrote."""
        d = json.loads(text)
        if not isinstance(d, dict) or not isinstance(d.get("id"), str) or not isinstance(d.get("files", []), list):
            raise ValueError("not a tcsession manifest")
        files = []
        for f in d.get("files", []):
            if not isinstance(f, dict) or not isinstance(f.get("path"), str):
                raise ValueError("a file entry without a path")
            files.append(FileRecord(
                path=f["path"], existed=bool(f.get("existed")), before_sha256=f.get("before_sha256"),
                after_sha256=f.get("after_sha256"), before_mode=str(f.get("before_mode") or ""),
                before_owner=str(f.get("before_owner") or ""), before_link=f.get("before_link"),
                saved=f.get("saved")))
        services = d.get("services_before") or {}
        if not isinstance(services, dict):
            raise ValueError("services_before is not a table")
        return cls(id=d["id"], mode=str(d.get("mode", "?")), time=str(d.get("time", "?")),
                   packages_installed=tuple(str(p) for p in d.get("packages_installed") or ()),
                   services_before=tuple(sorted((str(k), str(v)) for k, v in services.items())),
                   files=tuple(files), kind=str(d.get("kind") or "deploy"),
                   packages_changed=tuple((str(a), str(b), str(c)) for a, b, c in d.get("packages_changed") or ()))


@dataclasses.dataclass(frozen=True)
class Record:
    """One deploy as one host recorded it."""

    host: str
    manifest: Manifest
    created_dirs: tuple[str, ...] = ()
    rolled_back: bool = False

    @property
    def id(self) -> str:
        return self.manifest.id

    @property
    def mode(self) -> str:
        return self.manifest.mode

    @property
    def files(self) -> tuple[FileRecord, ...]:
        return self.manifest.files

    def to_dict(self) -> dict:
        return {"id": self.id, "host": self.host, "mode": self.mode, "time": self.manifest.time,
                "packages_installed": list(self.manifest.packages_installed),
                "kind": self.manifest.kind,
                "packages_changed": [list(p) for p in self.manifest.packages_changed],
                "services_before": dict(self.manifest.services_before),
                "files": [dataclasses.asdict(f) for f in self.files],
                "created_dirs": list(self.created_dirs), "rolled_back": self.rolled_back}


def parse_history(text: str, host: str) -> tuple[list[Record], list[str]]:
    """The output of shell.history_script() -> (records, notes). A directory that is not a deploy
    of ours, or whose manifest is incomplete (a deploy that died while writing it), is skipped
    with a note naming it; nothing here raises on what a host sent."""
    records, notes, entries = [], [], []
    current: dict | None = None
    target: list | None = None
    for line in text.splitlines():
        if line.startswith("@@deploy "):
            parts = line[len("@@deploy "):].split(" ")
            if len(parts) != 2 or not DEPLOY_ID.match(parts[0]) or parts[1] not in ("applied", "rolled-back"):
                notes.append(f"{host}: {DEPLOYS}: skipped {line[len('@@deploy '):]!r}, not a tcsession deploy")
                current = target = None
                continue
            current = {"id": parts[0], "rolled_back": parts[1] == "rolled-back", "manifest": [], "dirs": []}
            entries.append(current)
            target = current["manifest"]
        elif line.startswith("@@dirs "):
            target = current["dirs"] if current is not None and line[len("@@dirs "):] == current["id"] else None
        elif target is not None:
            target.append(line)
    for e in entries:
        try:
            manifest = Manifest.from_json(base64.b64decode("".join(e["manifest"]), validate=True))
        except (ValueError, binascii.Error, UnicodeDecodeError):
            notes.append(f"{host}: {deploy_dir(e['id'])}: no complete manifest (a deploy that stopped "
                         "before recording anything); nothing there to undo")
            continue
        if manifest.id != e["id"]:
            notes.append(f"{host}: {deploy_dir(e['id'])}: its manifest names deploy {manifest.id!r}; skipped")
            continue
        records.append(Record(host, manifest, tuple(l.strip() for l in e["dirs"] if l.strip()), e["rolled_back"]))
    return sorted(records, key=lambda r: r.id), notes


def parse_jar_list(content: bytes | None) -> dict[str, str]:
    """msm-jars: path -> sha256 of the jars a deploy placed."""
    if content is None:
        return {}
    out = {}
    for line in content.decode("utf-8", "replace").splitlines():
        parts = line.split()
        if len(parts) == 2 and not line.startswith("#"):
            out[parts[1]] = parts[0]
    return out

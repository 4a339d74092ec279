"""The delta cluster's encryption key (`[delta] encrypt = true`): never in hosts.toml, kept in a
root-only file on this machine (`[delta] key_file`, default `<inventory>.cluster-key` beside the
inventory), generated on first use: 32 random bytes as 64 hex characters (AES-256)."""

from __future__ import annotations

import os
import re
import secrets
import stat
from pathlib import Path

from tcsession.errors import TcsessionError

_HEX = re.compile(r"[0-9a-fA-F]{32}|[0-9a-fA-F]{48}|[0-9a-fA-F]{64}")


DRY_RUN_KEY = "0" * 64  # what a dry run plans with when no key exists yet (the deploy generates one)
FIX = "set [delta] key_file to a readable file of your own (mode 600), or remove it to have a new key generated"


def read_key(path: str | Path) -> str:
    """The key in `path` (one line of hex); TcsessionError, one line, when it is unusable."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        what = "a link to a file that does not exist" if path.is_symlink() else "missing"
        raise TcsessionError(f"{path}: the cluster key file ([delta] key_file) is {what}; point the link at the "
                             "key, or remove it to have a new key generated (then deploy every node)") from None
    except OSError as e:
        raise TcsessionError(f"{path}: the cluster key file ([delta] key_file) cannot be read ({e.strerror}); {FIX}") from None
    if not stat.S_ISREG(st.st_mode):
        raise TcsessionError(f"{path}: the cluster key file ([delta] key_file) is "
                             f"{'a directory' if stat.S_ISDIR(st.st_mode) else 'not a regular file'}; set key_file "
                             "to a file path (the key is generated there on first use)")
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TcsessionError(f"{path}: the cluster key is readable by group or others; chmod 600 {path}")
    try:
        text = path.read_text(errors="replace").strip()
    except OSError as e:
        raise TcsessionError(f"{path}: the cluster key file ([delta] key_file) cannot be read ({e.strerror}); "
                             f"run as its owner, or {FIX}") from None
    if not _HEX.fullmatch(text):
        raise TcsessionError(f"{path}: not a cluster key (one line of 32, 48 or 64 hex characters); remove the "
                             f"file to have a new one generated (then deploy every node) or restore it")
    return text.lower()


def key_for(key_file: str | Path, create: bool = True) -> str:
    """The cluster key, generated into `key_file` (mode 600, never overwritten) when absent; with
    `create` false (a dry run) an absent key is "" and nothing is written."""
    path = Path(key_file)
    try:
        path.lstat()  # (a dangling symlink is present: never written through)
        present = True
    except FileNotFoundError:
        present = False
    except OSError as e:
        raise TcsessionError(f"{path}: the cluster key file ([delta] key_file) cannot be read ({e.strerror}); {FIX}") from None
    if not present:
        if not create:
            return ""  # a dry run writes nothing: the key a deploy generates is new to every node
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            return read_key(path)
        except OSError as e:
            raise TcsessionError(f"{path}: cannot create the cluster key ({e.strerror}); set [delta] key_file "
                                 "to a writable path") from None
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_hex(32) + "\n")
    return read_key(path)

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


def read_key(path: str | Path) -> str:
    """The key in `path` (one line of hex); TcsessionError, one line, when it is unusable."""
    path = Path(path)
    st = path.stat()
    if st.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise TcsessionError(f"{path}: the cluster key is readable by group or others; chmod 600 {path}")
    text = path.read_text(errors="replace").strip()
    if not _HEX.fullmatch(text):
        raise TcsessionError(f"{path}: not a cluster key (one line of 32, 48 or 64 hex characters); remove the "
                             f"file to have a new one generated (then deploy every node) or restore it")
    return text.lower()


def key_for(key_file: str | Path, create: bool = True) -> str:
    """The cluster key, generated into `key_file` (mode 600, never overwritten) when absent."""
    path = Path(key_file)
    if not path.exists():
        if not create:
            raise TcsessionError(f"{path}: no cluster key; a deploy generates it")
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

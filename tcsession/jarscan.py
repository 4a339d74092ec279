"""Tag-library scanning at Tomcat's start ([app] tld_scan, tld_jars): a managed ``<JarScanner>``
in Tomcat's global ``conf/context.xml``.

At every start Tomcat opens every jar of every application and of its own lib for tag library
descriptors (TLDs): about 0.7 s of a Tomcat 10.1 restart on this project's lab. Its
``StandardJarScanFilter`` (Tomcat 8 and later, ``<JarScanFilter>`` inside ``<JarScanner>``) with
``defaultTldScan="false"`` scans for TLDs only the jars its ``tldScan`` names (file-name
patterns, comma-separated); the other scans (web fragments, ServletContainerInitializers,
annotations: ``pluggability``) stay Tomcat's defaults. An application whose JSPs use a tag
library from a jar that is not listed then fails to compile those JSPs: OFF unless asked.

Patched with lxml as every file tcsession changes: one element with tcsession's marker comment
right before it, every other byte kept; removed again, the file comes back byte for byte. A
JarScanner of the operator's (no marker) is never changed: with the setting, the deploy is
refused before any change, naming the file.
"""

from __future__ import annotations

from lxml import etree

from tcsession.errors import TcsessionError
from tcsession.xmlpatch import (XmlDocument, append_child, element_children, insert_after, insert_before, is_marker,
                                remove_node)

MARKER_HEAD = "Managed by tcsession: tag libraries scanned at start"
MARKER = f"{MARKER_HEAD} ([app] tld_scan, tld_jars); changes here are replaced on the next deploy"
SINCE_MAJOR = 8  # StandardJarScanFilter's defaultTldScan and tldScan


def _quote(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def patch_context_jar_scan(data: bytes, tld_jars: tuple[str, ...] | None, source: str) -> bytes:
    """conf/context.xml with the managed JarScanner scanning for TLDs only `tld_jars` (None:
    without it, Tomcat's own scanning). Idempotent; stock -> list -> None gives the stock file back
    byte for byte. Malformed XML, a root other than <Context>, or an operator's own JarScanner
    while a list is given raise TcsessionError naming `source`, and nothing changes."""
    doc = XmlDocument(data, source)
    root = doc.root
    if root.tag != "Context":
        raise TcsessionError(f"{source}: the root element is <{root.tag}>, expected <Context>; is this a Tomcat "
                             "context.xml? (tcsession changed nothing)")
    markers = [n for n in root if is_marker(n, MARKER_HEAD)]
    ours = [m.getnext() for m in markers if m.getnext() is not None and m.getnext().tag == "JarScanner"]
    theirs = [p for p in element_children(root, "JarScanner") if not any(p is o for o in ours)]
    if tld_jars is None:
        if not markers:
            return data
        for node in ours + markers:
            remove_node(node)
        return doc.to_bytes()
    if theirs:
        raise TcsessionError(f"{source}: has a <JarScanner> of your own; set its JarScanFilter yourself, or remove "
                             'it so that [app] tld_scan = "listed" manages one (tcsession changed nothing)')
    scan = ",".join(tld_jars)
    if len(ours) == 1 and len(markers) == 1 and read_tld_jars(data, source) == tuple(tld_jars):
        return data  # already so
    for node in ours + markers:
        remove_node(node)
    children = list(root)
    scanner = doc.fragment(f'<JarScanner><JarScanFilter defaultTldScan="false" tldScan="{_quote(scan)}" />'
                           "</JarScanner>")
    if children:
        insert_after(children[-1], scanner)
    else:
        append_child(root, scanner)
    insert_before(scanner, etree.Comment(f" {MARKER} "))
    return doc.to_bytes()


def read_tld_jars(data: bytes | None, source: str) -> tuple[str, ...] | None:
    """The managed JarScanner's tldScan list in a context.xml (None: no managed one)."""
    if data is None:
        return None
    root = XmlDocument(data, source).root
    for m in root:
        if is_marker(m, MARKER_HEAD) and m.getnext() is not None and m.getnext().tag == "JarScanner":
            f = m.getnext().find("JarScanFilter")
            if f is None or f.get("defaultTldScan") != "false":
                return None
            return tuple(x for x in (f.get("tldScan") or "").split(",") if x)
    return None

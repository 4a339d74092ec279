"""Jar scanning at Tomcat's start ([app] jar_scan, jars_to_scan): a managed ``<JarScanner>`` in
Tomcat's global ``conf/context.xml``.

At every start Tomcat opens the jars of every application and of its own lib for tag library
descriptors (TLDs) and for what the Servlet spec calls pluggability (web-fragment.xml,
ServletContainerInitializers, annotated classes). Its ``StandardJarScanFilter`` (Tomcat 8 and
later, ``<JarScanFilter>`` inside ``<JarScanner>``) with ``defaultTldScan="false"`` and
``defaultPluggabilityScan="false"`` scans only the jars ``tldScan`` and ``pluggabilityScan`` name
(file-name patterns, comma-separated). Measured on Tomcat 10.1 in the lab (restart until the test
page answers, 5 runs each): 1.63 s stock, 1.63 s with the TLD scan alone off, 1.21 s with both
off (the test page's JSP still compiled: Jasper's own initializer comes from the container). An
application whose JSPs use a tag library, or whose jars carry a web fragment, an initializer
(Spring's, say) or annotated servlets, from a jar that is not listed then loses them: OFF unless
asked.

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

MARKER_HEAD = "Managed by tcsession: the jars scanned at start"
MARKER = f"{MARKER_HEAD} ([app] jar_scan, jars_to_scan); changes here are replaced on the next deploy"
SINCE_MAJOR = 8  # StandardJarScanFilter's defaultTldScan / defaultPluggabilityScan


def _quote(value: str) -> str:
    return value.replace("&", "&amp;").replace('"', "&quot;").replace("<", "&lt;")


def patch_context_jar_scan(data: bytes, jars_to_scan: tuple[str, ...] | None, source: str) -> bytes:
    """conf/context.xml with the managed JarScanner scanning only `jars_to_scan` (None:
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
    if jars_to_scan is None:
        if not markers:
            return data
        for node in ours + markers:
            remove_node(node)
        return doc.to_bytes()
    if theirs:
        raise TcsessionError(f"{source}: has a <JarScanner> of your own; set its JarScanFilter yourself, or remove "
                             'it so that [app] jar_scan = "listed" manages one (tcsession changed nothing)')
    scan = ",".join(jars_to_scan)
    if len(ours) == 1 and len(markers) == 1 and read_scanned_jars(data, source) == tuple(jars_to_scan):
        return data  # already so
    for node in ours + markers:
        remove_node(node)
    children = list(root)
    scanner = doc.fragment(f'<JarScanner><JarScanFilter defaultTldScan="false" tldScan="{_quote(scan)}" '
                           f'defaultPluggabilityScan="false" pluggabilityScan="{_quote(scan)}" /></JarScanner>')
    if children:
        insert_after(children[-1], scanner)
    else:
        append_child(root, scanner)
    insert_before(scanner, etree.Comment(f" {MARKER} "))
    return doc.to_bytes()


def read_scanned_jars(data: bytes | None, source: str) -> tuple[str, ...] | None:
    """The managed JarScanner's tldScan list in a context.xml (None: no managed one)."""
    if data is None:
        return None
    root = XmlDocument(data, source).root
    for m in root:
        if is_marker(m, MARKER_HEAD) and m.getnext() is not None and m.getnext().tag == "JarScanner":
            f = m.getnext().find("JarScanFilter")
            if f is None or f.get("defaultTldScan") != "false" or f.get("defaultPluggabilityScan") != "false":
                return None
            return tuple(x for x in (f.get("tldScan") or "").split(",") if x)
    return None

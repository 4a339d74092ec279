"""The test application: its web.xml, its JSP page, and the parser of that page's answer.

Pure functions: bytes/strings in, bytes/strings out.

- `render_web_xml(tomcat_major)`: a whole web.xml for the test application, with the
  deployment-descriptor schema of that Tomcat line and `<distributable/>`.
- `patch_web_xml(data, source)`: an operator's web.xml with `<distributable/>` added, every
  other byte kept (the new element is spliced into the original bytes, nothing is
  re-serialized), idempotent.
- `render_test_jsp()`: a JSP that compiles on Tomcat 7 to 11 and answers one machine-readable
  line `node=<node> session=<id> count=<n>`.
- `parse_test_line(body)`: that line, parsed.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lxml import etree

from tcsession.errors import TcsessionError

# --------------------------------------------------------------------------------------------
# web.xml

NS_J2EE = "http://java.sun.com/xml/ns/j2ee"  # Servlet 2.4 (Tomcat 5.5)
NS_JAVAEE_SUN = "http://java.sun.com/xml/ns/javaee"  # Servlet 2.5 / 3.0 (Tomcat 6 / 7)
NS_JAVAEE_JCP = "http://xmlns.jcp.org/xml/ns/javaee"  # Servlet 3.1 / 4.0 (Tomcat 8.x / 9)
NS_JAKARTAEE = "https://jakarta.ee/xml/ns/jakartaee"  # Servlet 5.0 / 6.0 / 6.1 (Tomcat 10.0 / 10.1 / 11)

#: Namespaces a web.xml root may have. None: a Servlet 2.2/2.3 descriptor (DOCTYPE, no namespace).
WEB_XML_NAMESPACES = (None, NS_J2EE, NS_JAVAEE_SUN, NS_JAVAEE_JCP, NS_JAKARTAEE)

#: Tomcat major version -> (namespace, servlet spec version) of the web.xml rendered for it.
#: 8 covers 8.0 and 8.5 (Servlet 3.1); 10 means 10.1 (Servlet 6.0), the 10.x line that is
#: still supported and that Debian 12 ships (10.0 had Servlet 5.0 and is end of life).
WEB_XML_SCHEMAS: dict[int, tuple[str, str]] = {
    7: (NS_JAVAEE_SUN, "3.0"),
    8: (NS_JAVAEE_JCP, "3.1"),
    9: (NS_JAVAEE_JCP, "4.0"),
    10: (NS_JAKARTAEE, "6.0"),
    11: (NS_JAKARTAEE, "6.1"),
}

DISPLAY_NAME = "tcsession test application"

_WEB_XML_TEMPLATE = """\
<?xml version="1.0" encoding="UTF-8"?>
<!-- Managed by tcsession: changes here are replaced on the next deploy. -->
<web-app xmlns="{ns}"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="{ns}
                             {ns}/web-app_{us}.xsd"
         version="{version}">

  <display-name>{display_name}</display-name>
  <description>
    Shows which Tomcat answered, the session id and a per-session counter, to prove that
    sessions survive the loss of a node.
  </description>

  <!-- Sessions of this application are replicated (Tomcat cluster) or stored (memcached). -->
  <distributable/>

</web-app>
"""


def render_web_xml(tomcat_major: int) -> bytes:
    """The test application's web.xml for a Tomcat major version (7, 8, 9, 10 or 11)."""
    try:
        ns, version = WEB_XML_SCHEMAS[tomcat_major]
    except (KeyError, TypeError):
        supported = ", ".join(str(m) for m in WEB_XML_SCHEMAS)
        raise TcsessionError(
            f"web.xml: no deployment descriptor schema for Tomcat {tomcat_major!r}; "
            f"supported Tomcat major versions: {supported}"
        ) from None
    text = _WEB_XML_TEMPLATE.format(
        ns=ns, us=version.replace(".", "_"), version=version, display_name=DISPLAY_NAME
    )
    return text.encode("utf-8")


# Elements that may come before <distributable/> in the Servlet 2.3 DTD's fixed order
# (icon?, display-name?, description?, distributable?, ...). From 2.4 on the order is free,
# and putting <distributable/> after them still reads naturally.
_LEADING = frozenset({"icon", "display-name", "description"})

_NAME_RE = re.compile(rb"[^\s/>]+")
_WS = b" \t\r\n"


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def patch_web_xml(data: bytes, source: str) -> bytes:
    """Return `data` with `<distributable/>` in the root element's namespace, added if missing.

    The element is inserted after a leading icon/display-name/description (or as the first
    child), indented like its neighbour; every other byte is kept, so the diff is one added
    line and patch_web_xml(patch_web_xml(x)) == patch_web_xml(x). `source` names the file in
    error messages.
    """
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or data[:4] in (b"\x00\x00\xfe\xff", b"\xff\xfe\x00\x00"):
        raise TcsessionError(
            f"{source}: UTF-16/UTF-32 web.xml is not supported; save it as UTF-8 and deploy again"
        )
    root = _parse(data, source)
    encoding = (root.getroottree().docinfo.encoding or "UTF-8").upper()
    if encoding.startswith(("UTF-16", "UTF-32", "UCS")):
        raise TcsessionError(
            f"{source}: {encoding} web.xml is not supported; save it as UTF-8 and deploy again"
        )

    qname = etree.QName(root)
    if qname.localname != "web-app":
        raise TcsessionError(
            f"{source}: root element is <{qname.localname}>, expected <web-app>; "
            "point tcsession at the application's WEB-INF/web.xml"
        )
    ns = qname.namespace
    if ns not in WEB_XML_NAMESPACES:
        raise TcsessionError(
            f"{source}: <web-app> has namespace {ns!r}, not a Java EE or Jakarta EE one "
            f"({', '.join(n for n in WEB_XML_NAMESPACES if n)}); fix the xmlns attribute"
        )

    children = [c for c in root if isinstance(c.tag, str)]

    def is_own(el: etree._Element, local: str | frozenset[str]) -> bool:
        q = etree.QName(el)
        names = {local} if isinstance(local, str) else local
        return q.namespace == ns and q.localname in names

    if any(is_own(c, "distributable") for c in children):
        return data

    anchor = -1  # index among child elements after which to insert; -1: first child
    for i, child in enumerate(children):
        if not is_own(child, _LEADING):
            break
        anchor = i

    scan = _scan_root(data, source)
    scanned_names = [name.split(b":")[-1] for (_s, _e, name) in scan.children]
    expected_names = [etree.QName(c).localname.encode("utf-8") for c in children]
    if scanned_names != expected_names:  # pragma: no cover - defensive, lxml parsed it
        raise TcsessionError(
            f"{source}: could not locate the children of <web-app> in the file's bytes; "
            "add <distributable/> to it by hand"
        )

    prefix = scan.root_name.split(b":")[0] + b":" if b":" in scan.root_name else b""
    element = b"<" + prefix + b"distributable/>"

    if scan.self_closing:
        # <web-app .../>  ->  <web-app ...><distributable/></web-app>
        gt = scan.start_tag_end - 1
        out = data[:gt - 1] + b">" + element + b"</" + scan.root_name + b">" + data[gt + 1:]
    elif anchor >= 0:
        start, end, _name = scan.children[anchor]
        indent = _last_line_ws(_ws_before(data, start))
        out = data[:end] + indent + element + data[end:]
    else:
        pos = scan.start_tag_end
        indent = _last_line_ws(_ws_after(data, pos))
        out = data[:pos] + indent + element + data[pos:]

    check = _parse(out, source)
    if not any(is_own(c, "distributable") for c in check if isinstance(c.tag, str)):
        raise TcsessionError(  # pragma: no cover - defensive
            f"{source}: adding <distributable/> failed; add it to the file by hand"
        )
    return out


def _parse(data: bytes, source: str) -> etree._Element:
    if not data.strip():
        raise TcsessionError(f"{source}: file is empty; expected a web.xml with a <web-app> root")
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False,
                             remove_blank_text=False, huge_tree=False)
    try:
        return etree.fromstring(data, parser)
    except etree.XMLSyntaxError as exc:
        raise TcsessionError(
            f"{source}: not well-formed XML ({_one_line(exc)}); fix the file and deploy again"
        ) from None


@dataclass(frozen=True)
class _RootScan:
    root_name: bytes  # qualified name as written, e.g. b"web-app" or b"j:web-app"
    start_tag_end: int  # offset just after the root start tag's ">"
    self_closing: bool
    children: list[tuple[int, int, bytes]]  # (start, end, qualified name) of child elements


def _scan_root(data: bytes, source: str) -> _RootScan:
    """Byte offsets of the root start tag and of each child element of the root.

    A small tokenizer for documents lxml has already found well-formed: it skips comments,
    processing instructions, CDATA, the DOCTYPE (with its internal subset) and quoted attribute
    values, and expands nothing.
    """

    def need(found: int) -> int:
        if found < 0:  # pragma: no cover - lxml accepted the document
            raise TcsessionError(f"{source}: unexpected end of file; fix the file and deploy again")
        return found

    n = len(data)
    i = 0
    depth = 0
    root_name = b""
    start_tag_end = -1
    children: list[list] = []
    while i < n:
        lt = data.find(b"<", i)
        if lt < 0:
            break
        if data.startswith(b"<!--", lt):
            i = need(data.find(b"-->", lt + 4)) + 3
        elif data.startswith(b"<![CDATA[", lt):
            i = need(data.find(b"]]>", lt + 9)) + 3
        elif data.startswith(b"<?", lt):
            i = need(data.find(b"?>", lt + 2)) + 2
        elif data.startswith(b"<!", lt):
            i = _skip_doctype(data, lt, need)
        elif data.startswith(b"</", lt):
            i = need(data.find(b">", lt)) + 1
            depth -= 1
            if depth == 1:
                children[-1][1] = i
            elif depth == 0:
                break
        else:
            gt = _start_tag_end(data, lt, need)
            i = gt + 1
            self_closing = data[gt - 1:gt] == b"/"
            m = _NAME_RE.match(data, lt + 1)
            name = m.group(0) if m else b""
            if depth == 0:
                root_name, start_tag_end = name, i
                if self_closing:
                    return _RootScan(root_name, start_tag_end, True, [])
                depth = 1
            else:
                if depth == 1:
                    children.append([lt, i if self_closing else -1, name])
                if not self_closing:
                    depth += 1
    if start_tag_end < 0:  # pragma: no cover - lxml found a root
        raise TcsessionError(f"{source}: no root element; fix the file and deploy again")
    return _RootScan(root_name, start_tag_end, False, [tuple(c) for c in children])


_START_TAG_RE = re.compile(rb"""<(?:[^>"']|"[^"]*"|'[^']*')*>""")


def _start_tag_end(data: bytes, lt: int, need) -> int:
    """Offset of the ">" closing the start tag at `lt`, skipping quoted attribute values."""
    m = _START_TAG_RE.match(data, lt)
    return need(m.end() - 1 if m else -1)


def _skip_doctype(data: bytes, lt: int, need) -> int:
    """Offset just after a <!DOCTYPE ...> declaration, internal subset included."""
    i = lt + 2
    n = len(data)
    in_subset = False
    while i < n:
        if in_subset and data.startswith(b"<!--", i):
            i = need(data.find(b"-->", i + 4)) + 3
            continue
        if in_subset and data.startswith(b"<?", i):
            i = need(data.find(b"?>", i + 2)) + 2
            continue
        c = data[i:i + 1]
        if c in (b'"', b"'"):
            i = need(data.find(c, i + 1)) + 1
            continue
        if in_subset:
            if c == b"]":
                in_subset = False
        elif c == b"[":
            in_subset = True
        elif c == b">":
            return i + 1
        i += 1
    return need(-1)


def _ws_before(data: bytes, pos: int) -> bytes:
    j = pos
    while j > 0 and data[j - 1] in _WS:
        j -= 1
    return data[j:pos]


def _ws_after(data: bytes, pos: int) -> bytes:
    j = pos
    while j < len(data) and data[j] in _WS:
        j += 1
    return data[pos:j]


def _last_line_ws(ws: bytes) -> bytes:
    """The line break (kept as \\r\\n or \\n) and indentation of the last line in `ws`."""
    k = ws.rfind(b"\n")
    if k < 0:
        return ws
    if k > 0 and ws[k - 1:k] == b"\r":
        k -= 1
    return ws[k:]


# --------------------------------------------------------------------------------------------
# The test page

#: The JVM system property tcsession sets (-Dtcsession.node=<name>) to name each node.
NODE_PROPERTY = "tcsession.node"

# Only the implicit objects session, request, response and out; no javax/jakarta import, so
# the page compiles on Tomcat 7 (Jasper source level 1.6) through Tomcat 11.
_TEST_JSP = r"""<%@ page session="true" contentType="text/plain; charset=UTF-8" pageEncoding="UTF-8" %><%--
  tcsession test page (managed by tcsession: changes here are replaced on the next deploy).
  Answers which node served the request, the session id and a counter kept in the session.
  The counter is set again on every request so that session replication sees the change.
  Machine-readable line: node=<node> session=<id> count=<n>
  Then what the request looked like to Tomcat: scheme=<http|https> secure=<true|false> client=<address>
  (behind nginx's HTTPS, Tomcat's RemoteIpValve makes them the browser's).
  With ?rotate=1 the session gets a new id first (changeSessionId); the line shows the new id.
  Tags touch (no line break between them) so that the answer starts with its first line.
--%><%
    response.setHeader("Cache-Control", "no-store, no-cache, must-revalidate, max-age=0");
    response.setHeader("Pragma", "no-cache");
    response.setDateHeader("Expires", 0L);

    // Read, add one, write, as one step: concurrent requests of one session on one node share
    // its object (MSM's lock serialises requests across nodes, not within one JVM).
    int count;
    synchronized (session) {
        Object previous = session.getAttribute("count");
        count = (previous instanceof Integer) ? ((Integer) previous).intValue() + 1 : 1;
        session.setAttribute("count", Integer.valueOf(count));
    }
    // ?rotate=1: a new id for the same session (request.changeSessionId(), Servlet 3.1, what
    // Tomcat does at login with changeSessionIdOnAuthentication). Called by reflection so the
    // page still compiles on Tomcat 7 (Servlet 3.0), where it answers rotate=unsupported.
    String rotated = "";
    if ("1".equals(request.getParameter("rotate"))) {
        try {
            request.getClass().getMethod("changeSessionId").invoke(request);
            rotated = "rotated";
        } catch (Exception e) {
            rotated = "rotate=unsupported";
        }
    }

    String node = System.getProperty("tcsession.node");
    if (node == null || node.trim().length() == 0) {
        try {
            node = java.net.InetAddress.getLocalHost().getHostName();
        } catch (java.net.UnknownHostException e) {
            node = "unknown";
        }
    }
    node = node.trim().replaceAll("\\s+", "_");
%>tcsession test application (reload: the count must keep rising whichever node answers) <%= rotated %>
node=<%= node %> session=<%= session.getId() %> count=<%= count %>
scheme=<%= request.getScheme() %> secure=<%= request.isSecure() %> client=<%= request.getRemoteAddr() %>
"""


TEST_PAGE_MARK = b"tcsession test page (managed by tcsession"


def is_our_test_page(data: bytes) -> bool:
    """A page tcsession placed (any version of it): it carries the page's header comment."""
    return TEST_PAGE_MARK in data[:400]


def render_test_jsp() -> bytes:
    """The test page (UTF-8). See the module docstring for what it answers."""
    return _TEST_JSP.encode("utf-8")


@dataclass(frozen=True)
class TestLine:
    """The machine-readable line of the test page: which node answered, session, counter."""

    __test__ = False  # not a pytest test class despite the name

    node: str
    session: str
    count: int

    @property
    def jvm_route(self) -> str | None:
        """The `.route` suffix of the session id, if any (Tomcat appends the jvmRoute)."""
        _, dot, route = self.session.rpartition(".")
        return route if dot and route else None


_TEST_LINE_RE = re.compile(r"^node=(\S+) session=(\S+) count=(\d+)[ \t]*\r?$", re.MULTILINE)


def parse_test_line(body: str) -> TestLine | None:
    """The `node=... session=... count=...` line of a test-page response, or None.

    None when the body has no such line or more than one (not the test page: an error page,
    a proxy's answer).
    """
    matches = _TEST_LINE_RE.findall(body)
    if len(matches) != 1:
        return None
    node, session, count = matches[0]
    return TestLine(node=node, session=session, count=int(count))

"""The session cookie's SameSite attribute ([app] same_site): a managed ``<CookieProcessor>`` in
Tomcat's global ``conf/context.xml``.

Tomcat sets SameSite only through its CookieProcessor (``sameSiteCookies``, Tomcat 8.5.42 and
9.0.21 on; Tomcat 7 has no CookieProcessor), and then on every cookie of every application whose
own ``META-INF/context.xml`` has no CookieProcessor of its own. ``Secure`` and ``HttpOnly`` need
no setting: HttpOnly is Tomcat's default, and Secure follows from a secure request (behind nginx's
HTTPS, the RemoteIpValve of tcsession.serverxml.patch_remote_ip).

Patched with lxml as every file tcsession changes: one element with tcsession's marker comment
right before it, every other byte kept; the element removed again gives the file back byte for
byte. A CookieProcessor of the operator's (no marker) is never changed: with a setting, the
deploy is refused before any change, naming the file.
"""

from __future__ import annotations

from lxml import etree

from tcsession.errors import TcsessionError
from tcsession.xmlpatch import (XmlDocument, append_child, element_children, insert_after, insert_before, is_marker,
                                remove_node)

#: Tomcat's own values for sameSiteCookies.
SAME_SITE = ("unset", "none", "lax", "strict")
PROCESSOR_CLASS = "org.apache.tomcat.util.http.Rfc6265CookieProcessor"
MARKER_HEAD = "Managed by tcsession: the session cookie's SameSite"
MARKER = f"{MARKER_HEAD} ([app] same_site); changes here are replaced on the next deploy"
#: The first patch version of each major with sameSiteCookies.
SINCE = {8: "8.5.42", 9: "9.0.21"}


def supported(major: int) -> bool:
    """Whether this Tomcat major can set SameSite (8.5 from 8.5.42; 9 and later)."""
    return major >= 8


def patch_context_cookies(data: bytes, same_site: str | None, source: str) -> bytes:
    """conf/context.xml with the managed CookieProcessor setting `same_site` (None: without it).
    Idempotent; stock -> same_site -> None gives the stock file back byte for byte. Malformed XML,
    a root other than <Context>, or an operator's own CookieProcessor while `same_site` is set raise
    TcsessionError naming `source`, and nothing changes."""
    if same_site is not None and same_site not in SAME_SITE:
        raise TcsessionError(f"{source}: same_site {same_site!r} is not one of {', '.join(SAME_SITE)}; "
                             "fix [app] same_site")
    doc = XmlDocument(data, source)
    root = doc.root
    if root.tag != "Context":
        raise TcsessionError(f"{source}: the root element is <{root.tag}>, expected <Context>; is this a Tomcat "
                             "context.xml? (tcsession changed nothing)")
    markers = [n for n in root if is_marker(n, MARKER_HEAD)]
    ours = [m.getnext() for m in markers if m.getnext() is not None and m.getnext().tag == "CookieProcessor"]
    theirs = [p for p in element_children(root, "CookieProcessor") if not any(p is o for o in ours)]
    if same_site is None:
        if not markers:
            return data
        for node in ours + markers:
            remove_node(node)
        return doc.to_bytes()
    if theirs:
        raise TcsessionError(f'{source}: has a <CookieProcessor> of your own; set sameSiteCookies="{same_site}" '
                             "on it yourself, or remove it so that [app] same_site manages one "
                             "(tcsession changed nothing)")
    if (len(ours) == 1 and len(markers) == 1 and ours[0].get("sameSiteCookies") == same_site
            and ours[0].get("className") == PROCESSOR_CLASS):
        return data  # already so
    for node in ours + markers:
        remove_node(node)
    children = list(root)
    processor = doc.fragment(f'<CookieProcessor className="{PROCESSOR_CLASS}" sameSiteCookies="{same_site}" />')
    if children:
        insert_after(children[-1], processor)
    else:
        append_child(root, processor)
    insert_before(processor, etree.Comment(f" {MARKER} "))
    return doc.to_bytes()


def read_same_site(data: bytes | None, source: str) -> str | None:
    """The managed CookieProcessor's sameSiteCookies in a context.xml (None: no managed one)."""
    if data is None:
        return None
    root = XmlDocument(data, source).root
    for m in root:
        if is_marker(m, MARKER_HEAD) and m.getnext() is not None and m.getnext().tag == "CookieProcessor":
            return m.getnext().get("sameSiteCookies")
    return None

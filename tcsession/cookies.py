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

from tcsession.errors import TcsessionError
from tcsession.xmlpatch import XmlDocument, managed_child, patch_managed_context_child

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
    element = (f'<CookieProcessor className="{PROCESSOR_CLASS}" sameSiteCookies="{same_site}" />'
               if same_site is not None else None)
    return patch_managed_context_child(
        data, source, "CookieProcessor", MARKER_HEAD, MARKER, element,
        lambda el: el.get("sameSiteCookies") == same_site and el.get("className") == PROCESSOR_CLASS,
        f'has a <CookieProcessor> of your own; set sameSiteCookies="{same_site}" on it yourself, or remove it so '
        "that [app] same_site manages one (tcsession changed nothing)")


def read_same_site(data: bytes | None, source: str) -> str | None:
    """The managed CookieProcessor's sameSiteCookies in a context.xml (None: no managed one)."""
    if data is None:
        return None
    el = managed_child(XmlDocument(data, source).root, "CookieProcessor", MARKER_HEAD)
    return el.get("sameSiteCookies") if el is not None else None

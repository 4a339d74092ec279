"""Where a Tomcat installation keeps things, per package and distribution family (pure).

See the shared notes, "Where things live": Debian's tomcat9/10/11 and the RHEL family's tomcat.
"""

from __future__ import annotations

import dataclasses
import re

from tcsession.errors import TcsessionError

# Probed in this order; the first installed package wins.
TOMCAT_LAYOUTS = (
    # (package, unit, conf dir, CATALINA_BASE, lib dir)
    ("tomcat11", "tomcat11", "/etc/tomcat11", "/var/lib/tomcat11", "/var/lib/tomcat11/lib"),
    ("tomcat10", "tomcat10", "/etc/tomcat10", "/var/lib/tomcat10", "/var/lib/tomcat10/lib"),
    ("tomcat9", "tomcat9", "/etc/tomcat9", "/var/lib/tomcat9", "/var/lib/tomcat9/lib"),
    ("tomcat", "tomcat", "/etc/tomcat", "/var/lib/tomcat", "/usr/share/tomcat/lib"),
)

# The package to install when a Tomcat host has none, by preference. A host already running
# one of these keeps it.
TOMCAT_PREFERENCE = ("tomcat10", "tomcat9", "tomcat11", "tomcat")


def tomcat_major(version: str) -> int | None:
    """'10.1.60-1~deb12u1' -> 10, '7.0.76-16.el7_9' -> 7, '2:9.0.43-2' -> 9."""
    m = re.match(r"(?:\d+:)?(\d+)\.", version)
    return int(m.group(1)) if m else None


@dataclasses.dataclass(frozen=True)
class Layout:
    """Where one Tomcat installation keeps things."""

    package: str
    unit: str
    conf: str
    base: str
    lib: str
    jvm_options: str  # the JVM options file the tool owns whole
    major: int

    @property
    def server_xml(self) -> str:
        return f"{self.conf}/server.xml"

    @property
    def context_xml(self) -> str:
        return f"{self.conf}/context.xml"

    @property
    def webapp(self) -> str:
        return f"{self.base}/webapps/ROOT"

    @property
    def web_xml(self) -> str:
        return f"{self.webapp}/WEB-INF/web.xml"

    @property
    def test_page(self) -> str:
        return f"{self.webapp}/test.jsp"

    @property
    def app_context(self) -> str:
        return f"{self.webapp}/META-INF/context.xml"


def layout_for(package: str, version: str) -> Layout:
    for pkg, unit, conf, base, lib in TOMCAT_LAYOUTS:
        if pkg == package:
            major = tomcat_major(version)
            if major is None:
                raise TcsessionError(f"cannot read a Tomcat major version from {package} {version}")
            if pkg == "tomcat":  # RHEL family: /etc/tomcat/conf.d/*.conf is read at start
                jvm = "/etc/tomcat/conf.d/tcsession.conf"
            else:  # Debian family: catalina.sh sources CATALINA_BASE/bin/setenv.sh
                jvm = f"{base}/bin/setenv.sh"
            return Layout(pkg, unit, conf, base, lib, jvm, major)
    raise TcsessionError(f"unknown Tomcat package {package!r}")


def all_layouts() -> list[Layout]:
    """Every layout (version unknown: major 0), for the files facts read whatever is installed."""
    return [dataclasses.replace(layout_for(pkg, "0.0")) for pkg, *_ in TOMCAT_LAYOUTS]


def installed_tomcat(packages: dict) -> Layout | None:
    """The installed Tomcat, from the facts' package -> version table."""
    for pkg, *_ in TOMCAT_LAYOUTS:
        if pkg in packages:
            return layout_for(pkg, packages[pkg])
    return None

"""The test application: web.xml rendering and patching, the JSP page, its answer's parser."""

from __future__ import annotations

import difflib
import os
import shutil
import subprocess
from pathlib import Path

import pytest
from lxml import etree

from tcsession import webapp
from tcsession.errors import TcsessionError
from tcsession.webapp import TestLine, parse_test_line, patch_web_xml, render_test_jsp, render_web_xml

DATA = Path(__file__).parent / "data" / "webxml"
SAMPLES = sorted(DATA.glob("*.xml"))
PARSER = etree.XMLParser(resolve_entities=False, no_network=True)


def root_of(data: bytes) -> etree._Element:
    return etree.fromstring(data, PARSER)


def own_children(root: etree._Element, local: str) -> list:
    ns = etree.QName(root).namespace
    return [c for c in root if isinstance(c.tag, str)
            and etree.QName(c).namespace == ns and etree.QName(c).localname == local]


# ------------------------------------------------------------------------------ render_web_xml

@pytest.mark.parametrize("major, ns, version", [
    (7, "http://java.sun.com/xml/ns/javaee", "3.0"),
    (8, "http://xmlns.jcp.org/xml/ns/javaee", "3.1"),
    (9, "http://xmlns.jcp.org/xml/ns/javaee", "4.0"),
    (10, "https://jakarta.ee/xml/ns/jakartaee", "6.0"),
    (11, "https://jakarta.ee/xml/ns/jakartaee", "6.1"),
])
def test_render_web_xml_schema_per_tomcat_line(major, ns, version):
    data = render_web_xml(major)
    assert data.startswith(b'<?xml version="1.0" encoding="UTF-8"?>\n')
    assert data.endswith(b"</web-app>\n")
    root = root_of(data)
    assert etree.QName(root).namespace == ns
    assert etree.QName(root).localname == "web-app"
    assert root.get("version") == version
    location = root.get("{http://www.w3.org/2001/XMLSchema-instance}schemaLocation").split()
    assert location == [ns, f"{ns}/web-app_{version.replace('.', '_')}.xsd"]
    assert len(own_children(root, "distributable")) == 1
    [name] = own_children(root, "display-name")
    assert name.text == "tcsession test application"
    assert render_web_xml(major) == data  # deterministic
    assert patch_web_xml(data, "web.xml") == data  # already distributable


@pytest.mark.parametrize("bad", [6, 12, "9", None])
def test_render_web_xml_unknown_major(bad):
    with pytest.raises(TcsessionError, match=r"web\.xml: no deployment descriptor schema for Tomcat"):
        render_web_xml(bad)


# ------------------------------------------------------------------------------- patch_web_xml

@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_patch_adds_one_distributable_in_the_documents_namespace(path):
    data = path.read_bytes()
    out = patch_web_xml(data, str(path))
    root = root_of(out)
    assert len(own_children(root, "distributable")) == 1
    # Nothing but the new element (and its indentation) differs: removing the inserted
    # bytes gives back the original, byte for byte.
    if out != data:
        p = 0
        while p < len(data) and data[p] == out[p]:
            p += 1
        added = len(out) - len(data)
        assert out[:p] == data[:p] and out[p + added:] == data[p:]
        inserted = out[p:p + added]  # may be a rotation of the insertion ("/><web:distributable")
        prefix = b"web:" if b"<web:web-app" in data else b""
        assert sorted(inserted.translate(None, b" \t\r\n")) == sorted(b"<" + prefix + b"distributable/>")


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_patch_is_idempotent(path):
    once = patch_web_xml(path.read_bytes(), str(path))
    assert patch_web_xml(once, str(path)) == once


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_patch_keeps_everything_else(path):
    data = path.read_bytes()
    before, after = root_of(data), root_of(patch_web_xml(data, str(path)))
    names = lambda r: [etree.QName(c).localname for c in r if isinstance(c.tag, str)]  # noqa: E731
    assert [n for n in names(after) if n != "distributable"] == [n for n in names(before) if n != "distributable"]
    comments = lambda r: [c.text for c in r.iter(etree.Comment)]  # noqa: E731
    assert comments(after) == comments(before)
    assert dict(after.attrib) == dict(before.attrib)
    assert after.nsmap == before.nsmap


def test_patch_tomcat_root_web_xml_exact():
    data = (DATA / "tomcat10.1-ROOT-web.xml").read_bytes()
    out = patch_web_xml(data, "ROOT/WEB-INF/web.xml")
    assert out == data.replace(
        b"     Welcome to Tomcat\n  </description>\n",
        b"     Welcome to Tomcat\n  </description>\n  <distributable/>\n",
    )
    added = [line for line in difflib.ndiff(data.decode().splitlines(), out.decode().splitlines())
             if line.startswith(("+ ", "- "))]
    assert added == ["+   <distributable/>"]


def test_patch_keeps_iso_8859_1_bytes():
    data = (DATA / "tomcat7-app-web.xml").read_bytes()
    assert "été".encode("iso-8859-1") in data
    out = patch_web_xml(data, "web.xml")
    assert b"    </description>\n    <distributable/>\n" in out
    assert "été".encode("iso-8859-1") in out
    assert out.startswith(b'<?xml version="1.0" encoding="ISO-8859-1"?>\n<!--\n Licensed')


def test_patch_dtd_descriptor_without_namespace():
    data = (DATA / "servlet2.3-dtd-web.xml").read_bytes()
    out = patch_web_xml(data, "web.xml")
    # Servlet 2.3 DTD order: icon?, display-name?, description?, distributable?, ...
    assert b"<display-name>Tutuka Remote API (Tomcat)</display-name>\n    <distributable/>\n" in out
    assert out.startswith(b"<!DOCTYPE web-app PUBLIC\n")
    assert out.endswith(b"</web-app>\n\n")
    assert etree.QName(root_of(out)[1]).namespace is None


def test_patch_crlf_and_tabs_first_child_when_no_display_name():
    data = (DATA / "tomcat9-crlf-no-display-name-web.xml").read_bytes()
    out = patch_web_xml(data, "web.xml")
    assert b'version="4.0">\r\n\t<distributable/>\r\n\r\n\t<!-- the servlets -->' in out
    assert b"\n" not in out.replace(b"\r\n", b"")


def test_patch_prefixed_namespace_entities_and_one_line_document():
    data = (DATA / "tomcat11-prefixed-entity-web.xml").read_bytes()
    out = patch_web_xml(data, "web.xml")
    assert (b"<web:display-name>&appname;</web:display-name><web:distributable/>"
            b"<web:session-config>") in out
    assert b"&appname;" in out and b"Shop &#x27;n&#x27; Co" in out  # nothing expanded
    assert out.endswith(b"</web:web-app>\n<!-- trailing comment -->\n")


def test_patch_leaves_already_distributable_file_alone():
    data = (DATA / "tomcat9-already-distributable-web.xml").read_bytes()
    assert patch_web_xml(data, "web.xml") is data


@pytest.mark.parametrize("data, expected", [
    (b'<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0"/>',
     b'<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0"><distributable/></web-app>'),
    (b'<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0" />\n',
     b'<web-app xmlns="https://jakarta.ee/xml/ns/jakartaee" version="6.0" ><distributable/></web-app>\n'),
    (b'<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee"></web-app>',
     b'<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee"><distributable/></web-app>'),
    (b'<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee">\n</web-app>\n',
     b'<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee">\n<distributable/>\n</web-app>\n'),
    # icon and description before display-name, a comment in between: after the last of them
    (b'<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee">\n  <icon/>\n  <!-- c -->\n'
     b'  <description>d</description>\n  <servlet/>\n</web-app>',
     b'<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee">\n  <icon/>\n  <!-- c -->\n'
     b'  <description>d</description>\n  <distributable/>\n  <servlet/>\n</web-app>'),
    # a <distributable/> in another namespace does not count
    (b'<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee" xmlns:o="urn:other">'
     b'<o:distributable/></web-app>',
     b'<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee" xmlns:o="urn:other">'
     b'<distributable/><o:distributable/></web-app>'),
    # a nested element called distributable does not count either; CDATA with markup skipped
    (b'<web-app xmlns="http://java.sun.com/xml/ns/javaee"><display-name><![CDATA[<a></b>]]>'
     b'</display-name><servlet><distributable/></servlet></web-app>',
     b'<web-app xmlns="http://java.sun.com/xml/ns/javaee"><display-name><![CDATA[<a></b>]]>'
     b'</display-name><distributable/><servlet><distributable/></servlet></web-app>'),
])
def test_patch_small_documents(data, expected):
    assert patch_web_xml(data, "web.xml") == expected
    assert patch_web_xml(expected, "web.xml") == expected


def test_patch_does_not_expand_entities():
    bomb = (b'<?xml version="1.0"?>\n<!DOCTYPE web-app [\n'
            b'<!ENTITY a "aaaaaaaaaa">\n<!ENTITY b "&a;&a;&a;&a;&a;&a;&a;&a;&a;&a;">\n'
            b'<!ENTITY c "&b;&b;&b;&b;&b;&b;&b;&b;&b;&b;">\n]>\n'
            b'<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee"><display-name>&c;</display-name>'
            b'</web-app>\n')
    out = patch_web_xml(bomb, "web.xml")
    assert b"<display-name>&c;</display-name><distributable/>" in out
    assert len(out) == len(bomb) + len(b"<distributable/>")


def test_patch_external_entity_is_not_read(tmp_path):
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    data = (f'<!DOCTYPE web-app [<!ENTITY x SYSTEM "file://{secret}">]>'
            '<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee"><display-name>&x;</display-name>'
            '</web-app>').encode()
    out = patch_web_xml(data, "web.xml")
    assert b"TOPSECRET" not in out


@pytest.mark.parametrize("data, message", [
    (b"", r"^web\.xml: file is empty"),
    (b"   \n", r"^web\.xml: file is empty"),
    (b"<web-app><display-name></web-app>", r"^web\.xml: not well-formed XML \(.+\); fix the file"),
    (b"<web-app>\n<a>\n<b>\n</web-app>", r"^web\.xml: not well-formed XML"),
    (b'<web-app xmlns="http://java.sun.com/xml/ns/javaee">&nbsp;</web-app>', r"^web\.xml: not well-formed XML"),
    (b'<Server port="8005"/>', r"^web\.xml: root element is <Server>, expected <web-app>"),
    (b'<web-app xmlns="urn:not-javaee"/>', r"^web\.xml: <web-app> has namespace 'urn:not-javaee'"),
    ('<?xml version="1.0" encoding="UTF-16"?><web-app/>'.encode("utf-16"), r"UTF-16/UTF-32 web\.xml is not supported"),
])
def test_patch_errors_are_one_line(data, message):
    with pytest.raises(TcsessionError, match=message) as info:
        patch_web_xml(data, "web.xml")
    assert "\n" not in str(info.value)


# ------------------------------------------------------------------------------------ the JSP

def test_jsp_shape():
    jsp = render_test_jsp()
    text = jsp.decode("utf-8")
    assert jsp == render_test_jsp()
    assert text.startswith('<%@ page session="true" contentType="text/plain; charset=UTF-8"')
    # Compiles on Tomcat 7 to 11: no imports, no javax/jakarta names.
    assert "import" not in text
    assert "javax" not in text and "jakarta" not in text
    assert 'System.getProperty("tcsession.node")' in text
    assert "java.net.InetAddress.getLocalHost().getHostName()" in text
    assert 'session.setAttribute("count", Integer.valueOf(count))' in text
    assert 'response.setHeader("Cache-Control", "no-store' in text
    assert "node=<%= node %> session=<%= session.getId() %> count=<%= count %>\n" in text
    assert text.endswith("client=<%= request.getRemoteAddr() %>\n")  # then what Tomcat saw of the request
    assert text.count("node=<%=") == 1


def test_jsp_template_output_parses():
    """What the page prints, with the expressions filled in, is read back by parse_test_line."""
    text = render_test_jsp().decode()
    template = text.split("\n%>", 1)[1]
    body = (template.replace("<%= node %>", "tomcat1")
            .replace("<%= session.getId() %>", "5A3F9C0E7B.tomcat1")
            .replace("<%= count %>", "3"))
    assert body.startswith("tcsession test application")
    assert parse_test_line(body) == TestLine("tomcat1", "5A3F9C0E7B.tomcat1", 3)


def _jasper_jars() -> dict[str, str]:
    """Class paths for Tomcat 9 and 10.1's JSP compiler, if their jars were extracted (see
    TCSESSION_JASPER_DIR: a directory holding Debian's tomcat9-*.jar / tomcat10-*.jar and ant.jar)."""
    root = Path(os.environ.get("TCSESSION_JASPER_DIR", "/tmp/tcsjsp/root/usr/share/java"))
    found = {}
    for line in ("tomcat9", "tomcat10"):
        jars = sorted(str(p) for p in root.glob(f"{line}-*.jar") if not any(c.isdigit() for c in p.name[len(line) + 1:]))
        if jars and (root / "ant.jar").exists():
            found[line] = os.pathsep.join(jars + [str(root / "ant.jar")])
    return found


@pytest.mark.parametrize("line", ["tomcat9", "tomcat10"])
def test_jsp_compiles_with_jasper(line, tmp_path):
    """Compiles the page with the real Jasper (JspC) and javac, when they are at hand."""
    cp = _jasper_jars().get(line)
    if not cp or not shutil.which("java") or not shutil.which("javac"):
        assert not os.environ.get("TCSESSION_JASPER_DIR"), "TCSESSION_JASPER_DIR set, jars missing"
        pytest.skip(f"{line} Jasper jars or a JDK not available (set TCSESSION_JASPER_DIR)")
    app = tmp_path / "app"
    (app / "WEB-INF").mkdir(parents=True)
    (app / "test.jsp").write_bytes(render_test_jsp())
    (app / "WEB-INF" / "web.xml").write_bytes(render_web_xml(9 if line == "tomcat9" else 10))
    out = tmp_path / "out"
    subprocess.run(["java", "-cp", cp, "org.apache.jasper.JspC", "-webapp", str(app), "-d", str(out),
                    "-javaEncoding", "UTF-8", "-failFast"], check=True, capture_output=True, timeout=120)
    sources = [str(p) for p in out.rglob("*.java")]
    assert len(sources) == 1
    result = subprocess.run(["javac", "--release", "8", "-nowarn", "-encoding", "UTF-8", "-cp", cp,
                             "-d", str(out), *sources], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    java = Path(sources[0]).read_text()
    assert 'out.write(" count=");' in java


# ---------------------------------------------------------------------------- parse_test_line

@pytest.mark.parametrize("body, expected", [
    ("node=tomcat1 session=ABC123.tomcat1 count=1\n", TestLine("tomcat1", "ABC123.tomcat1", 1)),
    ("tcsession test application\r\nnode=web-2 session=0F7E-n2.tomcat2 count=42\r\n",
     TestLine("web-2", "0F7E-n2.tomcat2", 42)),
    ("<html><body><pre>\nnode=h session=S count=7  \n</pre></body></html>", TestLine("h", "S", 7)),
    ("node=tomcat1 session=ABC count=0", TestLine("tomcat1", "ABC", 0)),
])
def test_parse_test_line(body, expected):
    assert parse_test_line(body) == expected


@pytest.mark.parametrize("body", [
    "",
    "<html><head><title>502 Bad Gateway</title></head></html>",
    "xnode=tomcat1 session=ABC count=1",
    "node=tomcat1 session=ABC count=one",
    "node=tomcat1  session=ABC count=1",
    "node=tomcat1 session=ABC count=1\nnode=tomcat2 session=ABC count=2\n",
])
def test_parse_test_line_none(body):
    assert parse_test_line(body) is None


def test_test_line_jvm_route():
    assert TestLine("n", "ABC.tomcat1", 1).jvm_route == "tomcat1"
    assert TestLine("n", "ABC-n1.tomcat2", 1).jvm_route == "tomcat2"
    assert TestLine("n", "ABC-n1", 1).jvm_route is None
    assert TestLine("n", "ABC.", 1).jvm_route is None


def test_module_constants():
    assert webapp.NODE_PROPERTY == "tcsession.node"
    assert webapp.DISPLAY_NAME == "tcsession test application"

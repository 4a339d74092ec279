"""Byte-preserving XML patching with lxml: bytes in, bytes out, the diff is exactly the change.

Why not just ``etree.tostring``: re-serializing a parsed Tomcat file changes lines nobody touched.
Measured with lxml 6.1.3 on Apache's stock server.xml (7.0.76 to 11.0.25):

- serializing the whole tree glues the leading licence comment to the root, rewrites the XML
  declaration with single quotes and drops the final newline;
- serializing only the root drops the top-level comments (they live outside the root);
- even the root alone is not identical: ``<Listener ... />`` becomes ``<Listener .../>`` and every
  start tag whose attributes span several lines (``<Connector>``, ``<Resource>``, ``<Host>``,
  ``<Valve>``) is collapsed onto one line. A one-attribute change gave a 40-line diff.

What this module does instead: :class:`XmlDocument` parses the bytes with lxml (safely:
``resolve_entities=False, no_network=True``) *and* records, for every element, comment, processing
instruction and entity reference inside the root, where it sits in the original bytes. Callers edit
the lxml tree as usual (or with the helpers below). :meth:`XmlDocument.to_bytes` then walks the
tree and copies the original bytes of everything that did not change: a start tag whose attributes
are unchanged is copied verbatim (layout, quote style, ``&quot;`` and all), a changed attribute
value is replaced inside its quotes, a new attribute is appended after the last one, a removed one
is cut with the whitespace before it, unchanged text and tails are copied raw (so CDATA sections,
character references and CRLF line ends survive). Only nodes that did not exist in the input are
serialized by lxml. The bytes before the root (XML declaration, DOCTYPE, licence comments) and after
it (final newline) are kept verbatim.

New content whose layout matters (a multi-line block) is best built with
:meth:`XmlDocument.fragment`: the fragment text is parsed and recorded the same way, so once
inserted into the tree its own layout is kept byte for byte too.

Whitespace is ordinary text in lxml (``.text`` of the parent, ``.tail`` of the previous sibling).
The helpers keep it tidy so that inserting a node adds whole lines and removing it takes exactly
those lines away again: ``remove_node(insert_after(a, x))`` restores the original bytes.

The tuple API (:func:`parse_xml` / :func:`serialize_xml`) is a thin layer over
:class:`XmlDocument`: the ``prefix`` that ``parse_xml`` returns is a ``bytes`` that also holds the
parsed document, so ``serialize_xml(prefix, root, suffix)`` is byte-preserving for a root that
came from ``parse_xml``. For a root built any other way it falls back to plain ``etree.tostring``.
"""

from __future__ import annotations

import codecs
import re
import weakref
from dataclasses import dataclass, field

from lxml import etree

from tcsession.errors import TcsessionError

__all__ = [
    "XmlDocument",
    "parse_xml",
    "serialize_xml",
    "document_of",
    "indent_of",
    "indent_unit",
    "insert_after",
    "insert_before",
    "append_child",
    "remove_node",
    "set_attribute",
    "remove_attribute",
    "element_children",
    "comment_texts",
]

XML_NS = "http://www.w3.org/XML/1998/namespace"
_WS = frozenset(b" \t\r\n")
_NAME_STOP = frozenset(b" \t\r\n/>=")
_PREDEFINED = frozenset({b"amp", b"lt", b"gt", b"quot", b"apos"})
_ENTITY_REF = re.compile(rb"&([^#;&<\s][^;&<\s]*);")
_XMLNS_DECL = re.compile(r'\s+xmlns(?::([^\s=]+))?="([^"]*)"')


def _parser(encoding: str | None = None) -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        remove_blank_text=False,
        remove_comments=False,
        remove_pis=False,
        strip_cdata=True,
        huge_tree=False,
        encoding=encoding,
    )


def _syntax_error(source: str, err: Exception) -> TcsessionError:
    line = getattr(err, "lineno", None) or 1
    column = None
    position = getattr(err, "position", None)
    if position and len(position) > 1 and position[1]:
        column = position[1]
    msg = getattr(err, "msg", None) or str(err)
    msg = re.sub(r"\s*\(<string>, line \d+\)\s*$", "", msg)
    msg = re.sub(r",\s*line \d+, column \d+\s*$", "", msg)
    msg = " ".join(msg.split())
    where = f"line {line}" + (f", column {column}" if column else "")
    return TcsessionError(
        f"{source}: not well-formed XML at {where}: {msg}; "
        f"fix the file or restore it (tcsession changed nothing)"
    )


def _kind(node) -> str:
    tag = node.tag
    if isinstance(tag, str):
        return "element"
    if tag is etree.Comment:
        return "comment"
    if tag is etree.ProcessingInstruction:
        return "pi"
    if tag is etree.Entity:
        return "entity"
    return "other"  # pragma: no cover - lxml has no other node kinds in a tree


# --------------------------------------------------------------------------- scanning


@dataclass
class _Attr:
    qname: str
    ws_start: int  # start of the whitespace before the name
    value_start: int  # first byte inside the quotes
    value_end: int  # the closing quote
    quote: str


@dataclass
class _Origin:
    data: bytes
    encoding: str


@dataclass
class _SNode:
    kind: str
    start: int
    end: int = -1
    stag_end: int = -1
    etag_start: int | None = None
    qname: str = ""
    attrs: list[_Attr] = field(default_factory=list)
    children: list["_SNode"] = field(default_factory=list)
    text_end: int = -1
    tail_end: int = -1


@dataclass
class _Rec:
    """Where an original node sits in its source bytes, and what it looked like when parsed."""

    kind: str
    origin: _Origin
    span: _SNode
    tag: object
    attrib: list[tuple[str, str]]
    text: str
    tail: str
    nsmap: dict
    target: str | None = None


def _scan(data: bytes, encoding: str) -> tuple[_SNode, int, int]:
    """Locate every node of the root element in ``data`` (already checked well-formed by lxml)."""
    n = len(data)
    pos = 0
    stack: list[_SNode] = []
    root: _SNode | None = None
    root_end = -1

    def add(node: _SNode) -> None:
        if stack:
            stack[-1].children.append(node)

    while pos < n:
        lt = data.find(b"<", pos)
        if stack:
            stop = n if lt < 0 else lt
            for m in _ENTITY_REF.finditer(data, pos, stop):
                if m.group(1) not in _PREDEFINED:
                    add(_SNode("entity", m.start(), m.end()))
        if lt < 0:
            break
        if data.startswith(b"<!--", lt):
            end = data.index(b"-->", lt + 4) + 3
            add(_SNode("comment", lt, end))
            pos = end
        elif data.startswith(b"<![CDATA[", lt):
            pos = data.index(b"]]>", lt + 9) + 3
        elif data.startswith(b"<?", lt):
            end = data.index(b"?>", lt + 2) + 2
            add(_SNode("pi", lt, end))
            pos = end
        elif data.startswith(b"<!", lt):
            pos = _skip_markup_decl(data, lt)
        elif data.startswith(b"</", lt):
            end = data.index(b">", lt) + 1
            node = stack.pop()
            node.etag_start = lt
            node.end = end
            pos = end
            if not stack:
                root_end = end
                break
        else:
            node, pos = _scan_start_tag(data, lt, encoding)
            if root is None:
                root = node
            add(node)
            if node.etag_start is None and node.end == node.stag_end:  # self-closing
                if not stack:
                    root_end = node.end
                    break
            else:
                stack.append(node)
    if root is None or root_end < 0:  # pragma: no cover - lxml accepted the document
        raise ValueError("no root element found while scanning")
    _fill_text_spans(root)
    return root, root.start, root_end


def _skip_markup_decl(data: bytes, lt: int) -> int:
    """Skip ``<!DOCTYPE ...>`` including an internal subset and quoted strings."""
    i = lt + 2
    depth = 0
    n = len(data)
    while i < n:
        c = data[i]
        if c in (0x22, 0x27):
            i = data.index(bytes([c]), i + 1) + 1
            continue
        if data.startswith(b"<!--", i):
            i = data.index(b"-->", i + 4) + 3
            continue
        if c == 0x5B:  # [
            depth += 1
        elif c == 0x5D:  # ]
            depth -= 1
        elif c == 0x3E and depth <= 0:  # >
            return i + 1
        i += 1
    raise ValueError("unterminated markup declaration")  # pragma: no cover


def _scan_start_tag(data: bytes, lt: int, encoding: str) -> tuple[_SNode, int]:
    i = lt + 1
    j = i
    while data[j] not in _NAME_STOP:
        j += 1
    node = _SNode("element", lt, qname=data[i:j].decode(encoding))
    while True:
        ws = j
        while data[j] in _WS:
            j += 1
        if data[j] == 0x3E:  # >
            node.stag_end = j + 1
            return node, j + 1
        if data.startswith(b"/>", j):
            node.stag_end = node.end = j + 2
            return node, j + 2
        k = j
        while data[k] not in _NAME_STOP:
            k += 1
        name = data[j:k].decode(encoding)
        while data[k] in _WS:
            k += 1
        if data[k] != 0x3D:  # pragma: no cover - lxml accepted the document
            raise ValueError(f"expected '=' after attribute {name!r}")
        k += 1
        while data[k] in _WS:
            k += 1
        quote = data[k]
        end = data.index(bytes([quote]), k + 1)
        node.attrs.append(_Attr(name, ws, k + 1, end, chr(quote)))
        j = end + 1


def _fill_text_spans(node: _SNode) -> None:
    if node.kind != "element":
        return
    if node.etag_start is None:
        node.text_end = node.stag_end
        return
    kids = node.children
    node.text_end = kids[0].start if kids else node.etag_start
    for idx, kid in enumerate(kids):
        kid.tail_end = kids[idx + 1].start if idx + 1 < len(kids) else node.etag_start
        _fill_text_spans(kid)


def _preorder(node: _SNode):
    yield node
    for kid in node.children:
        yield from _preorder(kid)


def _lxml_qname(el) -> str:
    local = etree.QName(el).localname
    return f"{el.prefix}:{local}" if el.prefix else local


def _clark(qname: str, nsmap: dict) -> str | None:
    """Clark name of an attribute written as ``qname``; None for namespace declarations."""
    if qname == "xmlns" or qname.startswith("xmlns:"):
        return None
    if ":" not in qname:
        return qname
    prefix, local = qname.split(":", 1)
    uri = XML_NS if prefix == "xml" else nsmap.get(prefix)
    return f"{{{uri}}}{local}" if uri else qname


# --------------------------------------------------------------------------- the document


class XmlDocument:
    """An XML file parsed with lxml whose untouched parts serialize back to the original bytes.

    ``root`` is an ordinary lxml element: edit it, then call :meth:`to_bytes`. ``prefix`` and
    ``suffix`` are the original bytes before and after the root element.
    """

    def __init__(self, data: bytes, source: str):
        if not isinstance(data, (bytes, bytearray)):
            raise TypeError("XmlDocument needs bytes")
        data = bytes(data)
        self.source = source
        self.data = data
        try:
            root = etree.fromstring(data, _parser())
        except etree.XMLSyntaxError as err:
            raise _syntax_error(source, err) from None
        if root is None:  # pragma: no cover - lxml raises on empty input
            raise TcsessionError(f"{source}: no root element; fix the file or restore it (tcsession changed nothing)")
        encoding = root.getroottree().docinfo.encoding or "UTF-8"
        try:
            codec = codecs.lookup(encoding)
            ascii_compatible = "<&\n".encode(codec.name) == b"<&\n"
        except LookupError:
            ascii_compatible = False
        if not ascii_compatible:
            raise TcsessionError(
                f"{source}: encoding {encoding} is not supported; convert the file to UTF-8 "
                f"(tcsession changed nothing)"
            )
        self.encoding = encoding
        self.newline = "\r\n" if b"\r\n" in data else "\n"
        self.root = root
        self._records: dict = {}
        start, end = self._record(_Origin(data, encoding), root)
        self.prefix = data[:start]
        self.suffix = data[end:]

    # ------------------------------------------------------------------ recording

    def _record(self, origin: _Origin, root) -> tuple[int, int]:
        try:
            sroot, start, end = _scan(origin.data, origin.encoding)
        except (ValueError, IndexError) as err:  # pragma: no cover - would be a scanner bug
            raise TcsessionError(
                f"{self.source}: could not locate the XML nodes in the file ({err}); "
                f"this is a tcsession bug, please report it (tcsession changed nothing)"
            ) from None
        snodes = list(_preorder(sroot))
        lnodes = list(root.iter())
        if len(snodes) != len(lnodes):  # pragma: no cover - would be a scanner bug
            raise TcsessionError(
                f"{self.source}: found {len(snodes)} XML nodes but lxml found {len(lnodes)}; "
                f"this is a tcsession bug, please report it (tcsession changed nothing)"
            )
        for snode, lnode in zip(snodes, lnodes):
            kind = _kind(lnode)
            if kind != snode.kind or (kind == "element" and _lxml_qname(lnode) != snode.qname):
                raise TcsessionError(  # pragma: no cover - would be a scanner bug
                    f"{self.source}: XML node at byte {snode.start} did not match lxml's "
                    f"({snode.kind} {snode.qname!r} vs {kind}); this is a tcsession bug, please "
                    f"report it (tcsession changed nothing)"
                )
            self._records[lnode] = _Rec(
                kind=kind,
                origin=origin,
                span=snode,
                tag=lnode.tag,
                attrib=list(lnode.attrib.items()) if kind == "element" else [],
                text=lnode.text or "",
                tail=lnode.tail or "",
                nsmap=dict(lnode.nsmap) if kind == "element" else {},
                target=lnode.target if kind == "pi" else None,
            )
        return start, end

    def fragment(self, text: str):
        """Parse ``text`` (one element, written with ``\\n`` line ends) into a detached element.

        Its layout is remembered: once inserted into this document's tree it serializes exactly
        as written (with this document's line ends and encoding).
        """
        raw = text.replace("\r\n", "\n").replace("\n", self.newline).encode(
            self.encoding, "xmlcharrefreplace"
        )
        try:
            el = etree.fromstring(raw, _parser(self.encoding))
        except etree.XMLSyntaxError as err:
            raise ValueError(f"fragment is not well-formed XML: {err}") from None
        self._record(_Origin(raw, self.encoding), el)
        return el

    # ------------------------------------------------------------------ serializing

    def to_bytes(self) -> bytes:
        """The document with every edit applied and every untouched byte as it was."""
        return self.prefix + self.serialize_root() + self.suffix

    def serialize_root(self) -> bytes:
        out: list[bytes] = []
        self._emit(self.root, out)
        return b"".join(out)

    def _raw(self, rec: _Rec, start: int, end: int) -> bytes:
        chunk = rec.origin.data[start:end]
        if rec.origin.encoding != self.encoding:  # pragma: no cover - fragments use ours
            chunk = chunk.decode(rec.origin.encoding).encode(self.encoding, "xmlcharrefreplace")
        return chunk

    def _encode(self, text: str) -> bytes:
        if self.newline != "\n":
            text = text.replace("\n", self.newline)
        return text.encode(self.encoding, "xmlcharrefreplace")

    def _escape_text(self, text: str) -> bytes:
        text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        text = text.replace("\r", "&#13;")
        return self._encode(text)

    def _escape_attr(self, value: str, quote: str) -> bytes:
        value = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        value = value.replace('"', "&quot;") if quote == '"' else value.replace("'", "&apos;")
        value = value.replace("\t", "&#9;").replace("\n", "&#10;").replace("\r", "&#13;")
        return value.encode(self.encoding, "xmlcharrefreplace")

    def _fresh(self, node) -> bytes:
        """Serialize a node that was not in any parsed input, with lxml."""
        text = etree.tostring(node, with_tail=False, encoding="unicode")
        parent = node.getparent()
        if _kind(node) == "element" and parent is not None:
            in_scope = parent.nsmap
            head_end = text.find(">")
            head, rest = text[:head_end], text[head_end:]

            def drop(m: re.Match) -> str:
                return "" if in_scope.get(m.group(1)) == m.group(2) else m.group(0)

            text = _XMLNS_DECL.sub(drop, head) + rest
        return self._encode(text)

    def _tail(self, node, out: list[bytes]) -> None:
        tail = node.tail or ""
        rec = self._records.get(node)
        if rec is not None and tail == rec.tail and rec.span.tail_end >= 0:
            out.append(self._raw(rec, rec.span.end, rec.span.tail_end))
        elif tail:
            out.append(self._escape_text(tail))

    def _emit(self, node, out: list[bytes]) -> None:
        rec = self._records.get(node)
        kind = _kind(node)
        if rec is None or rec.kind != kind:
            out.append(self._fresh(node))
            return
        span = rec.span
        if kind == "comment":
            same = (node.text or "") == rec.text
        elif kind == "pi":
            same = node.target == rec.target and (node.text or "") == rec.text
        elif kind == "entity":
            same = node.text == rec.text
        else:
            same = True
        if kind != "element":
            out.append(self._raw(rec, span.start, span.end) if same else self._fresh(node))
            return
        if node.tag != rec.tag:
            out.append(self._fresh(node))
            return

        head = self._start_tag(node, rec)
        text = node.text or ""
        children = list(node)
        self_closing = span.etag_start is None
        if self_closing and not text and not children:
            out.append(head)
            return
        if self_closing:  # gained content: <x .../> becomes <x ...>...</x>
            head = head[:-2].rstrip() + b">"
        out.append(head)
        if text == rec.text and not self_closing:
            out.append(self._raw(rec, span.stag_end, span.text_end))
        elif text:
            out.append(self._escape_text(text))
        for child in children:
            self._emit(child, out)
            self._tail(child, out)
        if self_closing:
            out.append(self._encode(f"</{span.qname}>"))
        else:
            out.append(self._raw(rec, span.etag_start, span.end))

    def _start_tag(self, node, rec: _Rec) -> bytes:
        span = rec.span
        current = dict(node.attrib.items())
        if list(current.items()) == rec.attrib:
            return self._raw(rec, span.start, span.stag_end)
        original = dict(rec.attrib)
        pieces: list[bytes] = []
        pos = span.start
        insert_at = span.start + 1 + len(span.qname.encode(rec.origin.encoding))
        for attr in span.attrs:
            insert_at = attr.value_end + 1
            key = _clark(attr.qname, rec.nsmap)
            if key is None or key not in original:
                continue  # namespace declaration: kept as written
            if key not in current:  # removed: cut it with the whitespace before it
                pieces.append(self._raw(rec, pos, attr.ws_start))
                pos = attr.value_end + 1
            elif current[key] != original[key]:
                pieces.append(self._raw(rec, pos, attr.value_start))
                pieces.append(self._escape_attr(current[key], attr.quote))
                pos = attr.value_end
        pieces.append(self._raw(rec, pos, insert_at))
        for key, value in current.items():
            if key not in original:
                name = _attr_qname(node, key)
                pieces.append(self._encode(f" {name}=") + b'"' + self._escape_attr(value, '"') + b'"')
        pieces.append(self._raw(rec, insert_at, span.stag_end))
        return b"".join(pieces)


def _attr_qname(node, key: str) -> str:
    if not key.startswith("{"):
        return key
    uri, local = key[1:].split("}", 1)
    if uri == XML_NS:
        return f"xml:{local}"
    for prefix, ns in node.nsmap.items():
        if prefix and ns == uri:
            return f"{prefix}:{local}"
    raise ValueError(f"no namespace prefix declared for attribute {key}")


# --------------------------------------------------------------------------- tuple API

class _Prefix(bytes):
    """The bytes before the root, carrying the document they came from (see parse_xml)."""

    document: "XmlDocument"


_DOCUMENTS: "weakref.WeakValueDictionary[int, XmlDocument]" = weakref.WeakValueDictionary()


def parse_xml(data: bytes, source: str):
    """Parse ``data`` safely; return ``(prefix, root, suffix)``.

    ``prefix`` is everything before the root element (XML declaration, DOCTYPE, top-level
    comments), ``suffix`` everything after it (usually the final newline), both verbatim.
    ``prefix`` is a ``bytes`` that also keeps the parsed document alive, so that
    :func:`serialize_xml` can copy the untouched bytes. Malformed input raises
    :class:`TcsessionError` naming ``source`` and the line.
    """
    doc = XmlDocument(data, source)
    prefix = _Prefix(doc.prefix)
    prefix.document = doc
    _DOCUMENTS[id(doc.root)] = doc
    return prefix, doc.root, doc.suffix


def document_of(root, prefix: bytes | None = None) -> XmlDocument | None:
    """The :class:`XmlDocument` behind a root returned by :func:`parse_xml`, if still alive."""
    doc = getattr(prefix, "document", None)
    if doc is None or doc.root is not root:
        doc = _DOCUMENTS.get(id(root))
    return doc if doc is not None and doc.root is root else None


def serialize_xml(prefix: bytes, root, suffix: bytes) -> bytes:
    """``prefix`` + the root element + ``suffix``.

    Byte-preserving for a root from :func:`parse_xml` (see the module docstring). For a root
    built some other way this is plain ``etree.tostring(root)``, which reformats start tags.
    """
    doc = document_of(root, prefix)
    body = doc.serialize_root() if doc is not None else etree.tostring(root)
    return bytes(prefix) + body + suffix


# --------------------------------------------------------------------------- tree helpers


def element_children(parent, tag: str | None = None) -> list:
    """Element children of ``parent`` (comments, PIs and entities skipped), optionally by tag."""
    return [c for c in parent if isinstance(c.tag, str) and (tag is None or c.tag == tag)]


def comment_texts(root) -> list[str]:
    """Texts of every comment inside ``root`` plus the top-level ones around it, in order."""
    before, after = [], []
    sib = root.getprevious()
    while sib is not None:
        if sib.tag is etree.Comment:
            before.append(sib.text or "")
        sib = sib.getprevious()
    sib = root.getnext()
    while sib is not None:
        if sib.tag is etree.Comment:
            after.append(sib.text or "")
        sib = sib.getnext()
    inside = [n.text or "" for n in root.iter(etree.Comment)]
    return before[::-1] + inside + after


def _text_before(node) -> str:
    prev = node.getprevious()
    if prev is not None:
        return prev.tail or ""
    parent = node.getparent()
    return (parent.text or "") if parent is not None else ""


def _set_text_before(node, value: str) -> None:
    prev = node.getprevious()
    if prev is not None:
        prev.tail = value or None
    else:
        node.getparent().text = value or None


def indent_of(node) -> str:
    """The whitespace that starts ``node``'s line, or its parent's plus two spaces if unknown."""
    before = _text_before(node)
    nl = before.rfind("\n")
    if nl >= 0 and before[nl + 1 :].strip(" \t") == "":
        return before[nl + 1 :]
    parent = node.getparent()
    if parent is None:
        return ""
    return indent_of(parent) + "  "


def indent_unit(parent) -> str:
    """One indentation step inside ``parent``, as its first child uses it (default two spaces)."""
    outer = indent_of(parent)
    for child in parent:
        inner = indent_of(child)
        if len(inner) > len(outer) and inner.startswith(outer):
            return inner[len(outer) :]
        break
    return "  "


def _cut_last_line(text: str) -> str:
    """``text`` without its trailing whitespace from the last line break on."""
    stripped = text.rstrip(" \t\r\n")
    run = text[len(stripped) :]
    nl = run.rfind("\n")
    return stripped + run[:nl] if nl >= 0 else stripped


def insert_after(anchor, new) -> None:
    """Put ``new`` on its own line right after ``anchor``, indented like ``anchor``.

    The whitespace that followed ``anchor`` (a blank line, say) now follows ``new``, so the diff
    is just the added lines.
    """
    if anchor.getparent() is None:
        raise ValueError("cannot insert next to the root element")
    indent = indent_of(anchor)
    gap = anchor.tail or ""
    nl = gap.find("\n")
    # trailing blanks on the anchor's own line stay there
    keep = gap[:nl] if nl >= 0 and not gap[:nl].strip() else ""
    anchor.addnext(new)
    anchor.tail = keep + "\n" + indent
    new.tail = gap[len(keep) :] or None


def insert_before(ref, new) -> None:
    """Put ``new`` on its own line right before ``ref``, indented like ``ref``."""
    if ref.getparent() is None:
        raise ValueError("cannot insert next to the root element")
    indent = indent_of(ref)
    ref.addprevious(new)
    new.tail = "\n" + indent


def append_child(parent, new) -> None:
    """Make ``new`` the last child of ``parent``, on its own line, one step deeper than parent."""
    children = list(parent)
    if children:
        insert_after(children[-1], new)
        return
    outer = indent_of(parent)
    inner = outer + indent_unit(parent)
    text = parent.text or ""
    parent.append(new)
    if "\n" in text:
        kept = _cut_last_line(text)
        parent.text = kept + "\n" + inner
        new.tail = text[len(kept) :]
    else:
        parent.text = text + "\n" + inner
        new.tail = "\n" + outer


def remove_node(node) -> None:
    """Remove ``node`` and the line break and indentation before it (the inverse of the inserts)."""
    parent = node.getparent()
    if parent is None:
        raise ValueError("cannot remove the root element")
    before = _cut_last_line(_text_before(node)) + (node.tail or "")
    prev = node.getprevious()
    parent.remove(node)
    if prev is not None:
        prev.tail = before or None
    else:
        parent.text = before or None


def set_attribute(el, name: str, value: str) -> None:
    """Set an attribute; an existing one keeps its place and quotes, a new one goes last."""
    el.set(name, value)


def remove_attribute(el, name: str) -> None:
    """Remove an attribute if present (serialized without the whitespace before it)."""
    if name in el.attrib:
        del el.attrib[name]


def is_marker(node, head: str) -> bool:
    """A comment tcsession put before an element it manages (its text starts with `head`)."""
    return node.tag is etree.Comment and (node.text or "").strip().startswith(head)


def marker_before(node, head: str):
    """The marker comment directly before `node` (only blanks between), or None."""
    prev = node.getprevious()
    if prev is not None and is_marker(prev, head) and not (prev.tail or "").strip():
        return prev
    return None


def managed_child(root, tag: str, marker_head: str):
    """The `tag` child of `root` that tcsession manages (its marker comment right before it), or None."""
    for m in root:
        if is_marker(m, marker_head) and m.getnext() is not None and m.getnext().tag == tag:
            return m.getnext()
    return None


def patch_managed_context_child(data: bytes, source: str, tag: str, marker_head: str, marker: str,
                                element: str | None, current, theirs: str) -> bytes:
    """A context.xml with one `tag` element tcsession manages, `marker` in a comment right before
    it, last among <Context>'s children: `element` (its XML), or none (None). Idempotent; stock ->
    element -> None gives the stock file back byte for byte. `current(el)`: whether the managed
    element already is what `element` would be (the bytes are then returned as they are). Malformed
    XML, a root other than <Context>, or a `tag` of the operator's (no marker) while `element` is
    given (the refusal: "<source>: <theirs>") raise TcsessionError, and nothing changes."""
    doc = XmlDocument(data, source)
    root = doc.root
    if root.tag != "Context":
        raise TcsessionError(f"{source}: the root element is <{root.tag}>, expected <Context>; is this a Tomcat "
                             "context.xml? (tcsession changed nothing)")
    markers = [n for n in root if is_marker(n, marker_head)]
    ours = [m.getnext() for m in markers if m.getnext() is not None and m.getnext().tag == tag]
    others = [p for p in element_children(root, tag) if not any(p is o for o in ours)]
    if element is None:
        if not markers:
            return data
        for node in ours + markers:
            remove_node(node)
        return doc.to_bytes()
    if others:
        raise TcsessionError(f"{source}: {theirs}")
    if len(ours) == 1 and len(markers) == 1 and current(ours[0]):
        return data  # already so
    for node in ours + markers:
        remove_node(node)
    children = list(root)
    new = doc.fragment(element)
    if children:
        insert_after(children[-1], new)
    else:
        append_child(root, new)
    insert_before(new, etree.Comment(f" {marker} "))
    return doc.to_bytes()

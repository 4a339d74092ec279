"""The inventory's reference: one key table, from which the JSON Schema (shipped in the package)
and docs/inventory.md's key reference are generated; both committed, both checked here against
what the code generates now, and the schema checked against the parser on real files with a real
JSON Schema validator (jsonschema)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import jsonschema
import pytest

from tcsession import inventory as I
from tcsession import reference

ROOT = Path(__file__).resolve().parent.parent


def test_every_key_of_every_table_is_described_and_every_table_is_in_the_reference():
    for t in reference.TABLES:
        assert list(t.keys) == list(t.spec), t.name
        assert all(doc.strip() for doc in t.keys.values()), t.name
    names = {t.name.split(".")[0] for t in reference.TABLES}
    assert names == set(I.TOP_TABLES)


def test_the_shipped_schema_and_the_committed_doc_are_what_the_key_table_generates():
    """(After changing a key: `python -m tcsession.reference --write`.)"""
    assert reference.SCHEMA_FILE.read_text() == reference.schema_text()
    doc = (ROOT / "docs" / "inventory.md").read_text()
    assert doc == reference.doc_with_reference(doc)
    assert reference.markdown() in doc


def validator():
    schema = json.loads(reference.SCHEMA_FILE.read_text())
    jsonschema.Draft7Validator.check_schema(schema)
    return jsonschema.Draft7Validator(schema)


@pytest.mark.parametrize("path", ["hosts.toml", "examples/hosts.real.toml", "tcsession/templates/hosts.toml"])
def test_the_schema_accepts_the_inventories_tcsession_ships(path):
    text = (ROOT / path).read_text().replace("$key_lines", 'key = "~/.ssh/id_ed25519"').replace(
        "$known_hosts_note", "").replace("$known_hosts", "~/.ssh/known_hosts")
    errors = [e.message for e in validator().iter_errors(tomllib.loads(text))]
    assert not errors, errors


@pytest.mark.parametrize("text, fragment", [
    ('[cluster]\nmode = "mesh"\n', "'mesh' is not one of ['delta', 'msm']"),
    ('[tomcat.tomcat1]\nadress = "192.0.2.11"\n', "Additional properties are not allowed ('adress' was unexpected)"),
    ('[delta]\nreceiver_port = 70000\n', "70000 is greater than the maximum of 65535"),
    ('[tomcat.Tomcat1]\naddress = "192.0.2.11"\n', "'Tomcat1' does not match"),
    ('[ssh]\nsudo = "yes"\n', "'yes' is not of type 'boolean'"),
    ('[lab]\nname = "My Lab"\n', "'My Lab' does not match"),
    ("[app.shop]\ncontext = \"/shop\"\n", "'war' is a required property"),
    ('[colour]\n', "Additional properties are not allowed ('colour' was unexpected)"),
])
def test_the_schema_refuses_what_the_parser_refuses(text, fragment, tmp_path):
    doc = _merged(tomllib.loads((ROOT / "hosts.toml").read_text()), tomllib.loads(text))
    messages = [e.message for e in validator().iter_errors(doc)]
    assert any(fragment in m for m in messages), messages
    path = tmp_path / "hosts.toml"  # and the parser: the same file refused
    path.write_text("\n".join(f"[{name}]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in tbl.items()
                                                      if not isinstance(v, dict))
                              for name, tbl in _flat(doc)))
    with pytest.raises(I.TcsessionError):
        I.load_inventory(path)


def _merged(base: dict, more: dict) -> dict:
    out = dict(base)
    for k, v in more.items():
        out[k] = _merged(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _flat(doc: dict):
    """A TOML document's tables as (dotted name, table), for writing it back."""
    for name, tbl in doc.items():
        if not isinstance(tbl, dict):
            continue
        if any(isinstance(v, dict) for v in tbl.values()):
            plain = {k: v for k, v in tbl.items() if not isinstance(v, dict)}
            if plain:
                yield name, plain
            for sub, inner in tbl.items():
                if isinstance(inner, dict):
                    yield f"{name}.{sub}", inner
        else:
            yield name, tbl

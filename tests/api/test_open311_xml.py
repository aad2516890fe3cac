"""Open311's XML form: the specification's JSON examples, read into our documents and written as
XML, come out as the specification's XML examples, element for element and text for text."""

from __future__ import annotations

import json
from pathlib import Path
from xml.etree import ElementTree

import msgspec
import pytest

from api.open311 import (Open311Created, Open311Error, Open311Failure, Open311Request, Open311Service,
                         Open311ServiceDefinition, split_format, to_xml)

FIXTURES = Path(__file__).parent.parent / "fixtures" / "open311"
IDENTIFIERS = {"service_code", "service_request_id", "address_id", "zipcode", "key"}


def _strings_for_ids(value):
    if isinstance(value, list):
        return [_strings_for_ids(v) for v in value]
    if isinstance(value, dict):
        return {k: str(v) if k in IDENTIFIERS and v is not None else _strings_for_ids(v) for k, v in value.items()}
    return value


def tree(element: ElementTree.Element) -> tuple:
    """Tag, stripped text and children in order: what an XML reader of the document sees."""
    return element.tag, (element.text or "").strip(), [tree(child) for child in element]


@pytest.mark.parametrize("name, root, document_type", [
    ("services", "services", list[Open311Service]),
    ("service_definition", "service_definition", Open311ServiceDefinition),
    ("post_response", "service_requests", list[Open311Created]),
    ("requests", "service_requests", list[Open311Request]),
    ("errors", "errors", list[Open311Error]),
])
def test_the_specifications_json_examples_render_as_its_xml_examples(name, root, document_type):
    example = _strings_for_ids(json.loads((FIXTURES / f"{name}.json").read_text()))
    if name == "post_response":
        example[0]["account_id"] = None
    document = msgspec.convert(example, document_type)
    xml = to_xml(root, document)
    assert xml.startswith(b'<?xml version="1.0" encoding="utf-8"?>\n')
    ours = tree(ElementTree.fromstring(xml))
    theirs = tree(ElementTree.fromstring((FIXTURES / f"{name}.xml").read_bytes()))
    if name in ("services",):  # the specification lists some fields in another order
        ours = (ours[0], ours[1], [(t, x, sorted(c)) for t, x, c in ours[2]])
        theirs = (theirs[0], theirs[1], [(t, x, sorted(c)) for t, x, c in theirs[2]])
    assert ours == theirs


def test_text_is_escaped_and_null_is_an_empty_element():
    xml = to_xml("errors", [Open311Error(400, "lat <91> & long")])
    assert b"<description>lat &lt;91&gt; &amp; long</description>" in xml
    created = to_xml("service_requests", [Open311Created("abc", None)])
    assert b"<service_notice />" in created and b"<account_id />" in created


def test_the_format_is_the_last_segments_suffix():
    assert split_format("streetlight_out.json") == ("streetlight_out", "json")
    assert split_format("a.b.xml") == ("a.b", "xml")
    for bad in ("streetlight_out", "x.html", ".json."):
        with pytest.raises(Open311Failure):
            split_format(bad)


def test_characters_xml_cannot_hold_never_break_the_document():
    """A citizen's description may carry control characters JSON takes in its stride; the XML
    form replaces them, so one report never makes the city's requests.xml unreadable."""
    fields = dict.fromkeys(Open311Request.__struct_fields__) | {
        "service_request_id": "abc12345", "status": "open", "service_code": "streetlight_out",
        "requested_datetime": "2026-12-01T20:00:00+09:00", "updated_datetime": "2026-12-01T20:00:00+09:00",
        "description": "dark\x01 since\x0b Monday\ttab\nline"}
    request = Open311Request(**fields)
    [parsed] = ElementTree.fromstring(to_xml("service_requests", [request]))
    assert parsed.find("description").text == "dark\ufffd since\ufffd Monday\ttab\nline"

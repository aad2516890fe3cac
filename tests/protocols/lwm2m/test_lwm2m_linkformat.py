"""CoRE link format: registration payloads, what they announce, serializing, and malformed input."""

from __future__ import annotations

import pytest

from protocols.lwm2m import linkformat
from protocols.lwm2m.errors import CodecError
from protocols.lwm2m.linkformat import Link


def test_registration(payload) -> None:
    links = linkformat.parse(payload("registration.link"))
    assert links == [
        Link("/", {"rt": "oma.lwm2m", "ct": "110"}),
        Link("/1/0"),
        Link("/3/0", {"ver": "1.1"}),
        Link("/3303/0"),
        Link("/3303/1"),
    ]
    assert linkformat.root_path(links) == "/"
    assert linkformat.content_formats(links) == [110]
    assert linkformat.object_instances(links) == {1: [0], 3: [0], 3303: [0, 1]}
    assert linkformat.object_versions(links) == {3: "1.1"}


def test_registration_with_alternate_root(payload) -> None:
    links = linkformat.parse(payload("streetlight-registration.link").decode())
    assert linkformat.root_path(links) == "/lwm2m"
    assert linkformat.content_formats(links) == [60, 110, 112, 11542, 11543]
    assert linkformat.object_instances(links) == {
        1: [0], 3: [0], 3311: [0, 1], 3416: [], 3418: [0]}
    assert linkformat.object_versions(links) == {3: "1.2", 3416: "2.0", 3418: "2.0"}


def test_serialize_round_trips(payload) -> None:
    for name in ("registration.link", "streetlight-registration.link"):
        links = linkformat.parse(payload(name))
        text = linkformat.serialize(links)
        assert linkformat.parse(text) == links
    spec = '</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>;ver=1.1,</3303/0>,</3303/1>'
    assert linkformat.serialize(linkformat.parse(spec)) == spec


def test_discover_attributes() -> None:
    links = linkformat.parse(b"</3/0>;pmin=10;pmax=60,</3/0/1>,</3/0/7>;dim=2;obs,</3/0/13>")
    assert links[0].attrs == {"pmin": "10", "pmax": "60"}
    assert links[2].attrs == {"dim": "2", "obs": None}
    assert linkformat.serialize(links) == (
        "</3/0>;pmin=10;pmax=60,</3/0/1>,</3/0/7>;dim=2;obs,</3/0/13>")
    assert linkformat.object_instances(links) == {3: [0]}
    assert linkformat.object_versions(links) == {}


def test_quoted_values_may_hold_separators_and_escapes() -> None:
    links = linkformat.parse(r'</3/0>;title="Lamp 7, Main St; \"north\" \\ side";ct="60 110"')
    assert links[0].attrs == {"title": 'Lamp 7, Main St; "north" \\ side', "ct": "60 110"}
    assert linkformat.parse(linkformat.serialize(links)) == links


def test_whitespace_between_links_is_tolerated() -> None:
    assert linkformat.parse(b" </1/0>,\n</3/0> ,\t</5/0>\n") == [
        Link("/1/0"), Link("/3/0"), Link("/5/0")]


def test_empty_payload_has_no_links() -> None:
    assert linkformat.parse(b"") == []
    assert linkformat.parse(b"  \n") == []


@pytest.mark.parametrize(
    "text",
    [
        "</3/0",  # unterminated <
        "</1/0>,</3/0",
        "3/0>",  # no <
        "</1/0>;ver=1.0</3/0>",  # links must be separated by commas
        "</1/0>x",
        "</3/0>;rt=\"oma.lwm2m",  # unterminated quote
        "</3/0>;rt=\"oma\\",  # escape at the very end
        "</3/0>;rt=\"oma\"x",  # junk after a quoted value
        "</3/0>;rt=oma\"lwm2m\"",
        "</3/0>;title=\"a\x01b\"",  # control character in a quoted string
        "<coap://example.com/3/0>",  # not a path
        "<3/0>",
        "<>",
        "</3/0?x=1>",
        "</3/0#frag>",
        "</3//0>",
        "</3/0/>",
        "</3 0>",
        "</3/0>;",  # empty attribute
        "</3/0>;=1",
        "</3/0>;ver=",  # empty value
        "</3/0>;ver=,</5/0>",
        "</3/0>;ver=1.0;ver=1.1",  # duplicate attribute
        "</3/0>,",  # trailing comma
        "</3/0>,,</5/0>",
        ",</3/0>",
        "</3/0> ;ver=1.1",
    ],
)
def test_malformed_link_format_is_refused(text: str) -> None:
    with pytest.raises(CodecError):
        linkformat.parse(text.encode())


def test_non_utf8_is_refused() -> None:
    with pytest.raises(CodecError):
        linkformat.parse(b'</3/0>;title="\xff"')


def test_link_count_is_capped() -> None:
    many = ",".join(f"</3303/{instance}>" for instance in range(linkformat.MAX_LINKS))
    assert len(linkformat.parse(many)) == linkformat.MAX_LINKS
    with pytest.raises(CodecError, match="more than"):
        linkformat.parse(many + ",</3303/99999>")
    with pytest.raises(CodecError, match="too large"):
        linkformat.parse(b"</1/0>," * 20_000)


def test_bad_ct_is_refused() -> None:
    with pytest.raises(CodecError):
        linkformat.content_formats(linkformat.parse('</>;rt="oma.lwm2m";ct="110 json"'))


@pytest.mark.parametrize(
    "links",
    [[Link("3/0")], [Link("/3/0", {"bad name": "x"})], [Link("/3/0", {"": None})]],
    ids=repr,
)
def test_serialize_refuses_what_it_cannot_write(links: list[Link]) -> None:
    with pytest.raises(CodecError):
        linkformat.serialize(links)


def test_attribute_values_are_numbers_where_discover_gives_numbers():
    from protocols.lwm2m.linkformat import attribute_values, parse

    link, resource = parse('</3303/0>;pmin=10;pmax=60;gt=-2.5;ver=1.10,</3303/0/5700>;dim;rt="x"')
    assert attribute_values(link) == {"pmin": 10, "pmax": 60, "gt": -2.5, "ver": "1.10"}
    assert attribute_values(resource) == {"dim": None, "rt": "x"}

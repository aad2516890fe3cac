"""What a device's registered links say it hosts, and which part of a path it lacks."""

from __future__ import annotations

from fleet.commands.hosting import hosted, lacks
from fleet.objectmodel import ResourcePath

LIGHT = '</>;rt="oma.lwm2m";ct=110,</1/0>,</3/0>;ver=1.1,</3311/0>,</3416>'
BIN = '</lwm2m>;rt="oma.lwm2m",</lwm2m/1/0>,</lwm2m/3/0>,</lwm2m/3435/0>'


def test_links_give_objects_and_instances_under_the_clients_root():
    assert hosted(LIGHT) == {(1, 0), (3, 0), (3311, 0), (3416, None)}
    assert hosted(BIN) == {(1, 0), (3, 0), (3435, 0)}
    assert hosted("") == frozenset()


def test_a_path_lacks_its_object_or_its_instance():
    p = ResourcePath.parse
    assert lacks(p("/3311/0/5851"), hosted(BIN)) == "/3311"
    assert lacks(p("/3/1/13"), hosted(BIN)) == "/3/1"
    assert lacks(p("/3416/0/1"), hosted(LIGHT)) == "/3416/0"   # the object, but no instance of it
    assert lacks(p("/3/0/13"), hosted(BIN)) is None
    assert lacks(p("/3416"), hosted(LIGHT)) is None
    assert lacks(p("/3311/0/5851"), frozenset()) is None       # nothing known: sent as always


def test_security_and_oscore_are_never_judged_by_the_links():
    # A client never registers objects 0 and 21 (LwM2M 1.1 core 6.2.1): their absence is normal.
    p = ResourcePath.parse
    assert lacks(p("/0/1/10"), hosted(BIN)) is None
    assert lacks(p("/21/0/0"), hosted(LIGHT)) is None

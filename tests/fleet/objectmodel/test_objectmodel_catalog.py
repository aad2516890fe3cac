"""The shipped catalog: lookups, and that catalog_data.py matches the registry XML it came from."""

from __future__ import annotations

import subprocess
import sys
import xml.etree.ElementTree as ElementTree
from pathlib import Path

import pytest

import fleet.objectmodel.catalog_data as catalog_data
from fleet.objectmodel import CATALOG, Catalog, Description, ResourcePath, ResourceType
from fleet.objectmodel.generate import parse_registry, render
from tests.ci import unavailable

REPO = Path(__file__).resolve().parents[3]
REGISTRY = REPO.parent / "shared" / "lwm2m-registry"


@pytest.fixture
def registry() -> Path:
    if not REGISTRY.is_dir():
        unavailable("no shared/lwm2m-registry beside the repository")
    return REGISTRY


needs_registry = pytest.mark.usefixtures("registry")

STREET_FURNITURE_OBJECTS = {0, 1, 3, 4, 5, 6, 12, 3303, 3305, 3311, 3411, 3416, 3417, 3418, 3419,
                            3429, 3435, 3452, 3453}


def test_catalog_holds_the_street_furniture_objects() -> None:
    assert {definition.id for definition in CATALOG} >= STREET_FURNITURE_OBJECTS
    assert 3311 in CATALOG
    assert len(CATALOG) >= len(STREET_FURNITURE_OBJECTS)


def test_resource_lookup() -> None:
    dimmer = CATALOG.resource(3311, 5851)
    assert dimmer is not None
    assert (dimmer.name, dimmer.type, dimmer.units, dimmer.range) == (
        "Dimmer", ResourceType.INTEGER, "/100", "0..100")
    assert dimmer.readable and dimmer.writable and not dimmer.executable
    reboot = CATALOG.resource(3, 4)
    assert reboot is not None and reboot.type is ResourceType.NONE and reboot.executable
    assert CATALOG.resource(3, 9999) is None
    assert CATALOG.resource(9999, 0) is None
    assert CATALOG.resource_at(ResourcePath(3, 0)) is None
    assert CATALOG.resource_at(ResourcePath(3, 0, 7, 1)) == CATALOG.resource(3, 7)


def test_describe() -> None:
    assert CATALOG.describe("/3303/0/5700") == Description(
        "Temperature", "Sensor Value", None, ResourceType.FLOAT)
    assert CATALOG.describe(ResourcePath(3305, 2, 5800)) == Description(
        "Power Measurement", "Instantaneous active power", "W", ResourceType.FLOAT)
    assert CATALOG.describe("/3435/0") == Description("Filling level", "Filling level", None, None)
    assert CATALOG.describe("/3/0/6/1").name == "Available Power Sources"
    assert CATALOG.describe("/9999/0/1") is None
    assert CATALOG.describe("/3/0/9999") is None
    with pytest.raises(ValueError):
        CATALOG.describe("/3/zero")


def test_object_definitions() -> None:
    device = CATALOG.object(3)
    assert device is not None
    assert (device.name, device.multiple, device.mandatory) == ("Device", False, True)
    assert device.urn.startswith("urn:oma:lwm2m:oma:3")
    assert CATALOG.object(3303).multiple
    assert CATALOG.object(6).version == "1.0"  # Location has no ObjectVersion element


def test_from_rows_builds_an_equal_catalog() -> None:
    again = Catalog.from_rows(catalog_data.OBJECTS)
    assert list(again) == list(CATALOG)


def test_importing_the_package_leaves_catalog_data_alone() -> None:
    # The generator runs while the shell has truncated catalog_data.py for its output.
    code = ("import sys, fleet.objectmodel.generate; "
            "print('fleet.objectmodel.catalog_data' in sys.modules)")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                            text=True, check=True)
    assert result.stdout.strip() == "False"


@needs_registry
def test_generated_module_is_current() -> None:
    shipped = (REPO / "fleet" / "objectmodel" / "catalog_data.py").read_text()
    assert render(parse_registry(REGISTRY)) == shipped, "regenerate catalog_data.py"


@needs_registry
def test_generator_command_line() -> None:
    result = subprocess.run([sys.executable, "-m", "fleet.objectmodel.generate", str(REGISTRY)],
                            cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout == (REPO / "fleet" / "objectmodel" / "catalog_data.py").read_text()


@needs_registry
@pytest.mark.parametrize("xml_file", sorted(REGISTRY.glob("*.xml")) or [REGISTRY / "absent.xml"],
                         ids=lambda path: path.name)
def test_catalog_matches_registry_xml(xml_file: Path) -> None:
    # Read the XML here without the generator's code, so a bug there cannot hide itself.
    types = {"": "none", "Unsigned Integer": "unsigned"}
    element = ElementTree.parse(xml_file).getroot().find("Object")
    definition = CATALOG.object(int(element.findtext("ObjectID")))
    assert definition is not None
    assert definition.name == " ".join(element.findtext("Name").split())
    assert definition.urn == element.findtext("ObjectURN").strip()
    assert definition.multiple == (element.findtext("MultipleInstances").strip() == "Multiple")
    items = element.findall("Resources/Item")
    assert sorted(definition.resources) == sorted(int(item.get("ID")) for item in items)
    for item in items:
        resource = definition.resources[int(item.get("ID"))]
        kind = item.findtext("Type").strip()
        assert resource.type.value == types.get(kind, kind.lower())
        assert resource.name == " ".join(item.findtext("Name").split())
        assert resource.operations == item.findtext("Operations").strip()
        assert resource.multiple == (item.findtext("MultipleInstances").strip() == "Multiple")
        assert resource.mandatory == (item.findtext("Mandatory").strip() == "Mandatory")
        assert resource.units == ((item.findtext("Units") or "").strip() or None)
        assert resource.range == ((item.findtext("RangeEnumeration") or "").strip() or None)


def test_generator_refuses_unknown_types(tmp_path: Path) -> None:
    (tmp_path / "9.xml").write_text(
        "<LWM2M><Object><Name>Odd</Name><ObjectID>9</ObjectID><ObjectURN>urn:x</ObjectURN>"
        "<MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory>"
        "<Resources><Item ID='0'><Name>X</Name><Operations>R</Operations>"
        "<MultipleInstances>Single</MultipleInstances><Mandatory>Optional</Mandatory>"
        "<Type>Complex</Type></Item></Resources></Object></LWM2M>")
    with pytest.raises(ValueError, match="unknown type"):
        parse_registry(tmp_path)


def test_render_is_loadable_python(tmp_path: Path) -> None:
    source = render(list(CATALOG))
    namespace: dict = {}
    exec(compile(source, "catalog_data.py", "exec"), namespace)  # our own output
    assert list(Catalog.from_rows(namespace["OBJECTS"])) == list(CATALOG)

"""The OpenAPI document says what the API does, and its docs UI needs nothing from the internet."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

import httpx
import pytest

PROBLEM = "#/components/schemas/Problem"
METHODS = {"get", "post", "put", "patch", "delete"}


@pytest.fixture
async def document(api_url: str) -> dict:
    async with httpx.AsyncClient(base_url=api_url) as client:
        response = await client.get("/schema/openapi.json")
    assert response.status_code == 200
    return response.json()


def operations(document: dict):
    for path, item in document["paths"].items():
        for method, operation in item.items():
            if method in METHODS:
                yield path, method, operation


async def test_every_api_operation_lists_its_problems_as_problem_json(document):
    api = [(path, method, op) for path, method, op in operations(document) if path.startswith("/api/v1/")]
    assert len(api) > 40
    for path, method, op in api:
        where = f"{method.upper()} {path}"
        responses = op["responses"]
        assert {"401", "429", "503"} <= set(responses), where
        if "{" in path:
            assert "404" in responses, where
        if "requestBody" in op:
            assert {"400", "413"} <= set(responses), where
        if op.get("parameters") or "requestBody" in op:
            assert "400" in responses, where
        if method != "get" or path in ("/api/v1/apikeys", "/api/v1/audit"):
            assert "403" in responses, where
        for status, response in responses.items():
            if int(status) >= 400:
                assert response["content"] == {"application/problem+json": {"schema": {"$ref": PROBLEM}}}, \
                    (where, status)


async def test_the_problem_schema_names_each_field_at_fault(document):
    schemas = document["components"]["schemas"]
    problem = schemas["Problem"]
    assert set(problem["required"]) == {"type", "title", "status", "detail", "instance"}
    errors = problem["properties"]["errors"]["oneOf"][0]
    assert errors["type"] == "array" and errors["items"] == {"$ref": "#/components/schemas/FieldProblem"}
    field_problem = schemas["FieldProblem"]
    assert set(field_problem["properties"]) == {"field", "message", "row"}
    assert set(field_problem["required"]) == {"field", "message"}


async def test_import_declares_csv_and_geojson_bodies(document):
    body = document["paths"]["/api/v1/devices/import"]["post"]["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"text/csv", "application/geo+json"}
    geojson = body["content"]["application/geo+json"]["schema"]
    assert geojson["properties"]["type"] == {"const": "FeatureCollection"}
    assert {"415", "422"} <= set(document["paths"]["/api/v1/devices/import"]["post"]["responses"])
    exported = document["paths"]["/api/v1/devices/export"]["get"]["responses"]["200"]["content"]
    assert set(exported) == {"text/csv", "application/geo+json"}


async def test_enum_filters_declare_their_values(document):
    for path in ("/api/v1/devices", "/api/v1/devices/export", "/api/v1/groups/{group_id}/members"):
        parameters = {p["name"]: p for p in document["paths"][path]["get"]["parameters"]}
        assert parameters["kind"]["schema"]["enum"] == ["", "streetlight", "waste_bin", "wifi_ap"], path
        assert "decommissioned" in parameters["status"]["schema"]["enum"], path
    export = {p["name"]: p for p in document["paths"]["/api/v1/devices/export"]["get"]["parameters"]}
    assert export["format"]["schema"]["enum"] == ["csv", "geojson"]
    command = document["components"]["schemas"]["CommandCreate"]["properties"]["operation"]
    assert "execute" in command["enum"]


@pytest.mark.parametrize("schema, names", [
    ("CommandTarget", ["device_ids", "group_id", "filter"]),
    ("AssignmentCreate", ["group_id", "district"]),
    ("OverrideScope", ["district", "group_id", "device_ids"]),
])
async def test_exactly_one_scope_or_target_is_a_one_of(document, schema, names):
    one_of = document["components"]["schemas"][schema]["oneOf"]
    assert [branch["required"] for branch in one_of] == [[name] for name in names]
    for branch, name in zip(one_of, names):
        assert branch["properties"][name] == {"not": {"type": "null"}}
        assert all(branch["properties"][other] == {"type": "null"} for other in names if other != name)


async def test_non_empty_lists_and_ranges_are_in_the_schema(document):
    schemas = document["components"]["schemas"]
    assert schemas["CommandTarget"]["properties"]["device_ids"]["minItems"] == 1
    assert schemas["GroupMembers"]["properties"]["device_ids"]["minItems"] == 1
    assert schemas["Location"]["properties"]["lat"]["maximum"] == 90
    # Structs that refuse unknown fields say so, and only those.
    assert schemas["DeviceCreate"]["additionalProperties"] is False
    assert "additionalProperties" not in schemas["Device"]
    limit = {p["name"]: p for p in document["paths"]["/api/v1/devices"]["get"]["parameters"]}["limit"]
    assert limit["schema"]["minimum"] == 1 and limit["schema"]["maximum"] == 1000


async def test_a_bound_of_zero_on_an_optional_number_is_in_the_schema(document):
    # Litestar 2 drops a bound that is 0 from optional fields; schemathesis then sent pmin -3477196
    # as schema-valid and the server's 400 failed the run.
    attributes = document["components"]["schemas"]["NotificationAttributes"]["properties"]
    assert (attributes["pmin"]["minimum"], attributes["pmin"]["maximum"]) == (0, 30 * 86_400)
    assert attributes["st"]["minimum"] == 0
    assert "minimum" not in attributes["gt"]  # thresholds may be negative
    # Also under a description (Meta on the number, inside the optional).
    accuracy = document["components"]["schemas"]["PositionReport"]["properties"]["accuracy_m"]
    assert (accuracy["minimum"], accuracy["maximum"]) == (0, 100_000)


async def test_a_photo_is_documented_as_the_image_it_is(document):
    photo = document["paths"]["/api/v1/workorders/{work_order_id}/attachments/{attachment_id}"]["get"]
    assert set(photo["responses"]["200"]["content"]) == {"image/jpeg", "image/png", "image/webp"}


async def test_probes_need_no_key(document):
    assert document["security"] == [{"bearer": []}]
    for path in ("/healthz", "/readyz"):
        assert document["paths"][path]["get"]["security"] == []
    assert "503" in document["paths"]["/readyz"]["get"]["responses"]


async def test_docs_ui_loads_only_assets_fleet_serves(api_url):
    async with httpx.AsyncClient(base_url=api_url) as client:
        page = await client.get("/schema")
        assert page.status_code == 200 and "SwaggerUIBundle" in page.text
        assets = re.findall(r"""<(?:script|link)\b[^>]*?\b(?:src|href)=["']([^"']+)["']""", page.text)
        assert len(assets) >= 4, assets
        for asset in assets:
            assert not urlsplit(asset).netloc and asset.startswith("/"), asset
            served = await client.get(asset)
            assert served.status_code == 200 and served.content, asset
        assert "javascript" in (await client.get("/schema/assets/swagger-ui-bundle.js")).headers["content-type"]


async def test_options_names_every_method_of_the_path(seoul):
    for path, methods in (("/api/v1/groups", {"GET", "POST"}), ("/api/v1/devices", {"GET", "POST"}),
                          (f"/api/v1/groups/{'0' * 8}-0000-0000-0000-{'0' * 12}", {"GET", "PATCH", "DELETE"})):
        response = await seoul.client.options(path)
        assert response.status_code == 204
        assert methods | {"OPTIONS"} == set(response.headers["allow"].split(", ")), path


async def test_every_api_post_documents_the_idempotency_key_header(document):
    posts = [(path, op) for path, method, op in operations(document)
             if method == "post" and path.startswith("/api/v1/")]
    assert len(posts) > 10
    for path, op in posts:
        [header] = [p for p in op.get("parameters", []) if p["name"] == "Idempotency-Key"]
        assert header["in"] == "header" and header["required"] is False, path
        assert header["schema"]["maxLength"] == 255, path
        assert {"409", "422"} <= set(op["responses"]), path
    others = [op for path, method, op in operations(document) if method != "post"]
    assert not any(p["name"] == "Idempotency-Key" for op in others for p in op.get("parameters", []))
    # Operations with their own document (an image body) keep it beside the header.
    upload = [op for path, op in posts if "attachments" in path]
    assert upload and "image/png" in upload[0]["requestBody"]["content"]

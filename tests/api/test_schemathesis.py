"""Schemathesis over the whole OpenAPI document against the real app, a real port and a real database."""

from __future__ import annotations

import asyncio
import re

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from fleet.settings import HttpSettings, RateLimitSettings
from tests.conftest import TEST_MAX_BODY_BYTES, make_city, serve_api

# Per operation and phase; every operation is still reached, and the run stays well under a
# minute and a half on a busy two-core machine.
MAX_EXAMPLES = 10


def _run(base_url: str, key: str) -> list[str]:
    """Every phase and every check over every operation, as an admin; what failed, one line each."""
    config = SchemathesisConfig.from_dict({
        "seed": 20261206,
        "base-url": base_url,
        "headers": {"Authorization": f"Bearer {key}"},
        "generation": {"max-examples": MAX_EXAMPLES},
        # Schema-valid requests may still break a domain rule JSON Schema cannot say (since before
        # until, a cursor this API issued, a calendar naming an existing program): 422 says which.
        # A work order's PATCH needs the version it was read at in If-Match, which no generator
        # can know: 428 without one, 412 for another (both documented on the operation).
        "checks": {"positive_data_acceptance": {"expected-statuses": ["2xx", "401", "403", "404", "409",
                                                                       "412", "422", "428"]}},
    })
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json", config=config)
    # A live event stream never ends, so no response would ever be complete: those operations
    # are checked in tests/api/test_events.py (refusals included) instead.
    streams = _event_streams(schema.raw_schema)
    if streams:
        schema = schema.exclude(path=streams)
    lenient = _date_time_names(schema.raw_schema) | _boolean_names(schema.raw_schema)

    @schema.hook
    def filter_failure(context, failure, case, response) -> bool:
        # Litestar decodes leniently, so a date-time also accepts a Unix timestamp (`0`, "0.5")
        # and a boolean 0, 1 or "true"; that is a convenience, not a hole: keep every other
        # refusal the schema promises.
        wrong_type = re.search(r"(\w+): Incorrect type", failure.message)
        return not (failure.title.startswith("Schema-violating request accepted")
                    and wrong_type is not None and wrong_type.group(1) in lenient)

    problems: list[str] = []
    tested: set[str] = set()
    for event in from_schema(schema).execute():
        if isinstance(event, events.ScenarioFinished):
            tested |= {node.value.operation.label for node in event.recorder.cases.values()}
        if isinstance(event, events.ScenarioFinished) and event.status.name in ("FAILURE", "ERROR"):
            for case_id, checks in event.recorder.checks.items():
                for check in checks:
                    if check.failure_info is not None:
                        case = event.recorder.cases[case_id].value
                        problems.append(f"{case.operation.label} {check.name}: {check.failure_info.failure.title}"
                                        f" | {check.failure_info.failure.message[:300]} | {check.failure_info.code_sample[:300]}")
        elif isinstance(event, events.NonFatalError):
            problems.append(f"error {event.label}: {event.info.message[:300]}")
        elif isinstance(event, events.FatalError):
            problems.append(f"fatal: {event.exception!r}")
    untested = {op.ok().label for op in schema.get_all_operations()} - tested
    problems += [f"never tested: {label}" for label in untested]
    return problems


def _event_streams(document: dict) -> list[str]:
    return [path for path, item in document["paths"].items()
            if "text/event-stream" in item.get("get", {}).get("responses", {}).get("200", {}).get("content", {})]


def _boolean_names(node, found: set[str] | None = None) -> set[str]:
    """Every property name whose schema is a boolean (or null), anywhere in the document."""
    found = set() if found is None else found
    if isinstance(node, dict):
        for name, value in (node.get("properties") or {}).items():
            if isinstance(value, dict) and "'boolean'" in str(value) and "properties" not in value:
                found.add(name)
        for value in node.values():
            _boolean_names(value, found)
    elif isinstance(node, list):
        for value in node:
            _boolean_names(value, found)
    return found


def _date_time_names(node, found: set[str] | None = None) -> set[str]:
    """Every property or parameter name whose schema is a date-time, anywhere in the document."""
    found = set() if found is None else found
    if isinstance(node, dict):
        for name, value in (node.get("properties") or {}).items():
            if "date-time" in str(value):
                found.add(name)
        if node.get("in") == "query" and "date-time" in str(node.get("schema")):
            found.add(node["name"])
        for value in node.values():
            _date_time_names(value, found)
    elif isinstance(node, list):
        for value in node:
            _date_time_names(value, found)
    return found


@pytest.mark.timeout(600)
async def test_the_api_keeps_its_openapi_promises(db):
    city = await make_city(db, "seoul")
    # Rate limits off: a 429 would stand in for whatever the request would really have got.
    unlimited = HttpSettings(max_body_bytes=TEST_MAX_BODY_BYTES, limits=RateLimitSettings(0, 0, 0, 0, 0, 0))
    async with serve_api(db, unlimited) as url:
        problems = await asyncio.to_thread(_run, url, city.key)
    assert not problems, "\n".join(sorted(set(problems)))

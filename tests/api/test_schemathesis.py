"""Schemathesis over the whole OpenAPI document against the real app, a real port and a real database."""

from __future__ import annotations

import asyncio

import pytest
import schemathesis
from schemathesis.config import SchemathesisConfig
from schemathesis.engine import events, from_schema

from tests.conftest import serve_api, make_city

MAX_EXAMPLES = 8


def _run(base_url: str, key: str) -> list[str]:
    config = SchemathesisConfig.from_dict({
        "seed": 20261206,
        "base-url": base_url,
        "headers": {"Authorization": f"Bearer {key}"},
        "generation": {"max-examples": MAX_EXAMPLES},
        "phases": {"stateful": {"enabled": False}},
    })
    schema = schemathesis.openapi.from_url(f"{base_url}/schema/openapi.json", config=config)
    problems: list[str] = []
    for event in from_schema(schema).execute():
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
    return problems


@pytest.mark.timeout(600)
async def test_the_api_keeps_its_openapi_promises(db):
    city = await make_city(db, "seoul")
    async with serve_api(db) as url:
        problems = await asyncio.to_thread(_run, url, city.key)
    assert not problems, "\n".join(sorted(set(problems)))

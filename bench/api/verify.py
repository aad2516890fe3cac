"""Before any load: every path answers 200 with a page of the caller's city only, whose items
really match the filter; and the other city's key sees none of the measured city's devices.

A path whose page is empty (a small `--devices` leaves some sparse boxes bare) is dropped from
its rotation, so that during load an empty page always means something went wrong."""

from __future__ import annotations

import math
from urllib.parse import parse_qs, urlsplit

import httpx

from dataclasses import replace

from bench.api.scenarios import Scenario, cursor_path

EARTH_RADIUS_M = 6_371_008.8


def _distance_m(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    a = math.sin((p2 - p1) / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(math.radians(lon2 - lon1) / 2) ** 2
    return 2 * EARTH_RADIUS_M * math.asin(math.sqrt(a))


def _mismatch(item: dict, query: dict[str, str]) -> str | None:
    """Why an item does not belong on this page, or None."""
    if "status" not in query and item["status"] == "decommissioned":
        return "decommissioned device in an everyday list"
    for name in ("kind", "status", "district"):
        if name in query and item.get(name) != query[name]:
            return f"{name} {item.get(name)!r} != {query[name]!r}"
    if "tag" in query and query["tag"] not in item["tags"]:
        return f"tag {query['tag']!r} missing"
    lat, lon = item["location"]["lat"], item["location"]["lon"]
    if "bbox" in query:
        min_lon, min_lat, max_lon, max_lat = (float(v) for v in query["bbox"].split(","))
        if not (min_lon <= lon <= max_lon and min_lat <= lat <= max_lat):
            return "outside bbox"
    if "near" in query:
        c_lat, c_lon = (float(v) for v in query["near"].split(","))
        radius = float(query.get("radius_m", 500))
        if _distance_m(lat, lon, c_lat, c_lon) > radius + 0.5:
            return "outside radius"
        if item.get("distance_m") is None or abs(item["distance_m"] - _distance_m(lat, lon, c_lat, c_lon)) > 0.5:
            return "distance_m missing or wrong"
    return None


def check(base_url: str, scenarios: list[Scenario], key: str, own_prefix: str, other_key: str,
          other_prefix: str, walk_pages: int = 5) -> tuple[dict[str, int], list[Scenario]]:
    """Raise AssertionError naming the first bad page; return the items checked per scenario and
    the scenarios with their empty paths dropped (a scenario with none left is dropped)."""
    checked: dict[str, int] = {}
    usable: list[Scenario] = []
    with httpx.Client(base_url=base_url, timeout=30) as client:
        for scenario in scenarios:
            if not scenario.expect_items:
                response = client.get(scenario.paths[0])
                assert response.status_code == 200, f"{scenario.name}: {response.status_code}"
                checked[scenario.name] = 0
                usable.append(scenario)
                continue
            own = {"Authorization": f"Bearer {key}"}
            other = {"Authorization": f"Bearer {other_key}"}
            items_seen = 0
            paths = list(scenario.paths)
            kept = []
            if scenario.cursor_walk:
                paths, cursor, ids = [], None, set()
                for _ in range(walk_pages):
                    path = cursor_path(scenario.paths[0], cursor) if cursor else scenario.paths[0]
                    body = client.get(path, headers=own).json()
                    page_ids = {item["id"] for item in body["items"]}
                    assert not page_ids & ids, f"{scenario.name}: a device appeared on two pages"
                    ids |= page_ids
                    paths.append(path)
                    cursor = body["next_cursor"]
                    assert cursor, f"{scenario.name}: walk ended after {len(paths)} pages"
            for path in paths:
                query = {k: v[0] for k, v in parse_qs(urlsplit(path).query).items()}
                response = client.get(path, headers=own)
                assert response.status_code == 200, f"{path}: {response.status_code} {response.text[:300]}"
                items = response.json()["items"]
                if items:
                    kept.append(path)
                for item in items:
                    assert item["endpoint"].startswith(own_prefix), f"{path}: another city's device {item['endpoint']}"
                    reason = _mismatch(item, query)
                    assert reason is None, f"{path}: {item['endpoint']}: {reason}"
                items_seen += len(items)
                # The tenant wall, from the other side.
                if "cursor" not in query:
                    response = client.get(path, headers=other)
                    assert response.status_code == 200, f"{path} (other city): {response.status_code}"
                    for item in response.json()["items"]:
                        assert item["endpoint"].startswith(other_prefix), \
                            f"{path}: the other city sees {item['endpoint']}"
            checked[scenario.name] = items_seen
            if scenario.cursor_walk:
                assert kept, f"{scenario.name}: the first page is empty"
                usable.append(scenario)
            elif kept:
                usable.append(replace(scenario, paths=tuple(kept)))
    return checked, usable

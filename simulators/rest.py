"""Fleet's REST API as the simulator and the demo use it: the key's city, its devices, bulk import,
and plain JSON calls (collection set-up, plans, routes)."""

from __future__ import annotations

from typing import Any

import httpx

from simulators.inventory import DeviceSpec, import_csv

PAGE_SIZE = 1000
IMPORT_BATCH = 5000


class ApiError(Exception):
    """The API refused a request; the message carries its problem detail."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status  # None: no answer at all


class FleetApi:
    def __init__(self, base_url: str, key: str, *, timeout_s: float = 60.0) -> None:
        self._client = httpx.AsyncClient(base_url=base_url.rstrip("/"), timeout=timeout_s,
                                         headers={"Authorization": f"Bearer {key}"})

    async def __aenter__(self) -> FleetApi:
        return self

    async def __aexit__(self, *exc_info) -> None:
        await self._client.aclose()

    async def city(self) -> dict[str, Any]:
        """The key's city: id, slug, name, timezone."""
        return await self._json("GET", "/api/v1/tenant")

    async def devices(self, kind: str) -> list[dict[str, Any]]:
        """Every device of a kind in the city, following next_cursor."""
        devices: list[dict[str, Any]] = []
        cursor = None
        while True:
            params = {"kind": kind, "limit": PAGE_SIZE} | ({"cursor": cursor} if cursor else {})
            page = await self._json("GET", "/api/v1/devices", params=params)
            devices += page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return devices

    async def bin_fills(self) -> dict[str, float]:
        """Each bin's fill as Fleet last stored it, by endpoint (bins that never reported: none)."""
        fills: dict[str, float] = {}
        cursor = None
        while True:
            params = {"limit": 1000} | ({"cursor": cursor} if cursor else {})
            page = await self._json("GET", "/api/v1/bins/forecast", params=params)
            fills |= {b["endpoint"]: b["fill_now"] for b in page["items"] if b.get("fill_now") is not None}
            cursor = page.get("next_cursor")
            if not cursor:
                return fills

    async def import_devices(self, specs: list[DeviceSpec]) -> int:
        """Create devices with the all-or-nothing CSV import, a batch at a time."""
        created = 0
        for start in range(0, len(specs), IMPORT_BATCH):
            body = import_csv(specs[start:start + IMPORT_BATCH])
            result = await self._json("POST", "/api/v1/devices/import", content=body.encode(),
                                      headers={"Content-Type": "text/csv"})
            created += result["created"]
        return created

    async def get(self, path: str, **params: Any) -> Any:
        return await self._json("GET", path, params={k: v for k, v in params.items() if v is not None})

    async def post(self, path: str, body: Any = None) -> Any:
        return await self._json("POST", path, json=body)

    async def patch(self, path: str, body: Any) -> Any:
        return await self._json("PATCH", path, json=body)

    async def put(self, path: str, body: Any) -> Any:
        return await self._json("PUT", path, json=body)

    async def server_public_key(self) -> str:
        """Fleet's coaps raw public key (PEM), which RPK devices check the server by."""
        return (await self._json("GET", "/api/v1/security/server-key"))["public_key"]

    async def _json(self, method: str, path: str, **kwargs) -> Any:
        try:
            response = await self._client.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"{method} {path}: {exc}") from None
        if response.status_code >= 400:
            raise ApiError(f"{method} {path} answered {response.status_code}: {_problem(response)}",
                           response.status_code)
        return response.json()


def _problem(response: httpx.Response) -> str:
    try:
        problem = response.json()
    except ValueError:
        return response.text[:300]
    detail = problem.get("detail") or problem.get("title") or ""
    errors = problem.get("errors") or []
    listed = "; ".join(f"{e.get('field')}: {e.get('message')}" for e in errors[:5] if isinstance(e, dict))
    return f"{detail} ({listed})" if listed else str(detail)

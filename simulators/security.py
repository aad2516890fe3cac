"""Which credential each simulated device of a run uses, and giving Fleet the ones it lacks.

By default a device uses what the credentials file says (NoSec when it is not there).
`--security MODE` makes every device use MODE: a device without such a credential in the file
gets a fresh one, set in Fleet over REST (PUT /api/v1/devices/{id}/security) and written back
to the file, as a factory would flash a key and register it with the city.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable
from pathlib import Path

import structlog

from simulators.credentials import MODES, CredentialsFile, DeviceCredential, new_credential
from simulators.inventory import DeviceSpec
from simulators.rest import FleetApi

log = structlog.get_logger("simulators.security")

NOSEC = DeviceCredential("nosec")
CONCURRENT_PUTS = 16


class SecurityError(Exception):
    """Credentials were asked for that the run cannot have."""


def chosen(specs: list[DeviceSpec], file: CredentialsFile, security: str | None) -> tuple[
        dict[str, DeviceCredential], list[DeviceSpec]]:
    """(credential of every device that has the one it needs, the devices still lacking one)."""
    if security is not None and security not in MODES:
        raise SecurityError(f"--security is one of {', '.join(MODES)}")
    credentials: dict[str, DeviceCredential] = {}
    lacking: list[DeviceSpec] = []
    for spec in specs:
        stored = file.devices.get(spec.endpoint, NOSEC)
        if security is None or stored.mode == security:
            credentials[spec.endpoint] = stored
        elif security == "nosec":
            credentials[spec.endpoint] = NOSEC
        else:
            lacking.append(spec)
    return credentials, lacking


async def device_credentials(specs: list[DeviceSpec], security: str | None, file_path: Path | None,
                             api_url: str | None, key: str | None) -> tuple[dict[str, DeviceCredential], CredentialsFile]:
    """Every device's credential, the missing ones made and set in Fleet first."""
    file = CredentialsFile.load(file_path) if file_path is not None else CredentialsFile()
    credentials, lacking = chosen(specs, file, security)
    if not lacking:
        _check_server_key(credentials.values(), file)
        return credentials, file
    if not api_url or not key:
        raise SecurityError(f"{len(lacking)} devices have no {security} credential in the credentials file;"
                            " give --api and a key so the simulator can set them in Fleet")
    made = {spec.endpoint: new_credential(security, spec.endpoint) for spec in lacking}
    async with FleetApi(api_url, key) as api:
        if security == "rpk" and not file.server_public_key:
            file.server_public_key = await api.server_public_key()
            _check_server_key(made.values(), file)  # before any key is set
        ids = await _device_ids(api, lacking)
        slots = asyncio.Semaphore(CONCURRENT_PUTS)

        async def put(endpoint: str, credential: DeviceCredential) -> None:
            async with slots:
                await api.put(f"/api/v1/devices/{ids[endpoint]}/security", credential.security_body())

        await asyncio.gather(*(put(endpoint, credential) for endpoint, credential in made.items()))
    log.info("credentials set in Fleet", mode=security, devices=len(made))
    file.devices.update(made)
    credentials.update(made)
    if file_path is not None:
        file.save(file_path)
    _check_server_key(credentials.values(), file)
    return credentials, file


def _check_server_key(credentials: Iterable[DeviceCredential], file: CredentialsFile) -> None:
    """A device with a key pair checks the server by its public key (/0/x/4): without it, it
    cannot connect."""
    if not file.server_public_key and any(c.uses_public_key for c in credentials):
        raise SecurityError("RPK devices need Fleet's coaps public key: put it in the credentials file as"
                            " server_public_key (PEM)")


async def _device_ids(api: FleetApi, specs: list[DeviceSpec]) -> dict[str, str]:
    ids: dict[str, str] = {}
    for kind in sorted({spec.kind for spec in specs}):
        ids |= {d["endpoint"]: d["id"] for d in await api.devices(kind)}
    missing = [spec.endpoint for spec in specs if spec.endpoint not in ids]
    if missing:
        raise SecurityError(f"not in the city, so no credential can be set: {', '.join(missing[:5])}")
    return ids

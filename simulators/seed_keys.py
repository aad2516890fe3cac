"""The demo's API keys: kept in `<data dir>/demo.env` (0600) and reused while they are valid."""

from __future__ import annotations

import os
import re
import secrets
import shlex
from dataclasses import dataclass
from pathlib import Path
from uuid import UUID

from fleet.access.models import Role, Tenant
from fleet.access.service import ApiKeyService, system_principal
from fleet.db import Database
from fleet.errors import Unauthenticated

DEMO_ENV = "demo.env"
# Encrypts the demo's device keys (fleet.security): made once per data dir, then kept in demo.env,
# since the keys stored under it are unreadable under any other.
CREDENTIALS_KEY_VARIABLE = "FLEET_CREDENTIALS_KEY"
URL_VARIABLE = "FLEET_URL"
DATA_DIR_VARIABLE = "FLEET_DATA_DIR"
# The variables the banner and the README's tour use, with the role and name of each key.
DEMO_KEYS = {"ADMIN_KEY": (Role.ADMIN, "demo admin"),
             "CREW_KEY": (Role.CREW, "demo crew tablet"),
             "REPORTER_KEY": (Role.REPORTER, "demo reporter")}


@dataclass(frozen=True, slots=True)
class DemoKeys:
    admin: str
    crew: str
    reporter: str
    reused: bool  # every key came from the last run's file
    revoked: int  # earlier demo keys revoked this run


def read_demo_env(path: Path) -> dict[str, str]:
    """The `export NAME=value` lines of a demo.env; a missing or unreadable file is empty."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return {}
    found: dict[str, str] = {}
    for line in text.splitlines():
        try:
            words = shlex.split(line, comments=True)
        except ValueError:
            continue
        if len(words) == 2 and words[0] == "export" and "=" in words[1]:
            name, _, value = words[1].partition("=")
            found[name] = value
    return found


def write_demo_env(path: Path, variables: dict[str, str]) -> None:
    """Write the file for its owner only (0600 from creation: it holds an admin key), replacing
    the old one at once so a reader never sees half of it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.{os.getpid()}")
    descriptor = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as out:
        out.write("# fleet demo: `source` this file in a shell to use the demo's API (rewritten each start)\n")
        out.writelines(f"export {name}={shlex.quote(value)}\n" for name, value in variables.items())
    os.replace(partial, path)


def demo_credentials_key(env_file: Path) -> str:
    """The data dir's FLEET_CREDENTIALS_KEY (64 hex characters): the one demo.env holds, else a new one."""
    stored = read_demo_env(env_file).get(CREDENTIALS_KEY_VARIABLE, "")
    return stored if re.fullmatch(r"[0-9a-fA-F]{64}", stored) else secrets.token_hex(32)


async def demo_keys(db: Database, city: Tenant, crew_id: UUID, env_file: Path | None) -> DemoKeys:
    """The last run's keys (from `env_file`) while each is still a live key of the demo city with
    its role (and crew); a fresh one for any that is not. Every other demo key of the city is
    revoked, so restarts never pile up keys."""
    admin = system_principal(city)
    keys = ApiKeyService(db)
    stored = read_demo_env(env_file) if env_file is not None else {}
    secrets: dict[str, str] = {}
    current: set[UUID] = set()
    for variable, (role, name) in DEMO_KEYS.items():
        key_id = await _still_valid(keys, stored.get(variable, ""), city, role,
                                    crew_id if role is Role.CREW else None)
        if key_id is None:
            issued = await keys.issue(admin, role, name, crew_id=crew_id if role is Role.CREW else None)
            secrets[variable], key_id = issued.secret, issued.key.id
        else:
            secrets[variable] = stored[variable]
        current.add(key_id)
    names = {name for _, name in DEMO_KEYS.values()}
    earlier = [key for key in await keys.list(admin)
               if key.name in names and key.revoked_at is None and key.id not in current]
    for key in earlier:
        await keys.revoke(admin, key.id)
    reused = all(stored.get(variable) == secret for variable, secret in secrets.items())
    return DemoKeys(secrets["ADMIN_KEY"], secrets["CREW_KEY"], secrets["REPORTER_KEY"], reused, len(earlier))


async def _still_valid(keys: ApiKeyService, secret: str, city: Tenant, role: Role, crew_id: UUID | None) -> UUID | None:
    if not secret:
        return None
    try:
        principal = await keys.authenticate(secret)
    except Unauthenticated:
        return None
    if (principal.tenant_id, principal.role, principal.crew_id) != (city.id, role, crew_id):
        return None
    return principal.api_key_id

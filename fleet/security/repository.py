"""SQL for device credentials and the cities' device-security policy."""

from __future__ import annotations

from collections.abc import Sequence
from uuid import UUID

import asyncpg

from fleet.security.models import Credential
from fleet.security.validation import pem_of

_COLUMNS = "id, tenant_id, device_id, purpose, mode, identity, public_key, state, version, created_at, retired_at"
# What the directory keeps in memory for each credential that can authenticate: not retired, of
# a mode its city allows.
_KNOWN = """select c.id, c.tenant_id, c.device_id, d.endpoint, c.purpose, c.mode, c.identity,
                   c.key_ciphertext, c.key_nonce, c.public_key_xy, c.state
            from device_credentials c join devices d on d.tenant_id = c.tenant_id and d.id = c.device_id
            join tenants t on t.id = c.tenant_id
            where c.state <> 'retired' and c.mode = any(t.security_modes)"""


def _credential(row: asyncpg.Record) -> Credential:
    return Credential(row["id"], row["tenant_id"], row["device_id"], row["purpose"], row["mode"], row["identity"],
                      pem_of(row["public_key"]) if row["public_key"] is not None else None,
                      row["state"], row["version"], row["created_at"], row["retired_at"])


class CredentialRepository:
    def __init__(self, conn: asyncpg.Connection) -> None:
        self.conn = conn

    async def device(self, tenant_id: UUID, device_id: UUID) -> asyncpg.Record | None:
        return await self.conn.fetchrow(
            "select id, endpoint, status from devices where tenant_id = $1 and id = $2", tenant_id, device_id)

    async def security_modes(self, tenant_id: UUID) -> list[str]:
        return await self.conn.fetchval("select security_modes from tenants where id = $1", tenant_id) or []

    async def policy(self, tenant_id: UUID) -> tuple[bool, list[str]]:
        """Whether the city takes devices without DTLS, and the secure modes it takes."""
        row = await self.conn.fetchrow("select allow_nosec_devices, security_modes from tenants where id = $1",
                                       tenant_id)
        return (row["allow_nosec_devices"], row["security_modes"]) if row else (False, [])

    async def current(self, tenant_id: UUID, device_id: UUID) -> list[Credential]:
        rows = await self.conn.fetch(
            f"""select {_COLUMNS} from device_credentials
                where tenant_id = $1 and device_id = $2 and state <> 'retired'
                order by purpose desc, state, version desc""", tenant_id, device_id)
        return [_credential(r) for r in rows]

    async def insert(self, credential_id: UUID, tenant_id: UUID, device_id: UUID, purpose: str, mode: str, state: str, *,
                     identity: str | None = None, key_ciphertext: bytes | None = None, key_nonce: bytes | None = None,
                     public_key: bytes | None = None, public_key_xy: bytes | None = None) -> Credential:
        """Stored as the next version of the device's credentials for `purpose`."""
        row = await self.conn.fetchrow(
            f"""insert into device_credentials (id, tenant_id, device_id, purpose, mode, state, version, identity,
                                                key_ciphertext, key_nonce, public_key, public_key_xy)
                select $1, $2, $3, $4, $5, $6, coalesce(max(version), 0) + 1, $7, $8, $9, $10, $11
                from device_credentials where tenant_id = $2 and device_id = $3 and purpose = $4
                returning {_COLUMNS}""",
            credential_id, tenant_id, device_id, purpose, mode, state, identity, key_ciphertext, key_nonce,
            public_key, public_key_xy)
        return _credential(row)

    async def insert_many(self, tenant_id: UUID, rows: Sequence[tuple]) -> list[Credential]:
        """New devices' first credentials (an import), active, version 1, in one statement:
        rows of (id, device_id, purpose, mode, identity, key_ciphertext, key_nonce, public_key, public_key_xy)."""
        columns = [list(c) for c in zip(*rows, strict=True)]
        result = await self.conn.fetch(
            f"""insert into device_credentials (id, tenant_id, device_id, purpose, mode, state, version, identity,
                                                key_ciphertext, key_nonce, public_key, public_key_xy)
                select i, $1, d, p, m, 'active', 1, ident, ct, nonce, pk, xy
                from unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::text[], $7::bytea[], $8::bytea[],
                            $9::bytea[], $10::bytea[]) as r (i, d, p, m, ident, ct, nonce, pk, xy)
                returning {_COLUMNS}""", tenant_id, *columns)
        return [_credential(r) for r in result]

    async def export_cells(self, tenant_id: UUID, device_ids: list[UUID]) -> dict[UUID, dict[str, str]]:
        """The registry CSV's credential columns of these devices: mode, identities, public
        key; never a key. The mode is what GET …/security says: the active operational
        credential's, else a pending one's, else `nosec`."""
        rows = await self.conn.fetch(
            """select device_id, purpose, mode, identity, public_key from device_credentials
               where tenant_id = $1 and device_id = any($2::uuid[]) and state <> 'retired'
               order by state desc""", tenant_id, device_ids)  # pending first: the active one wins
        cells: dict[UUID, dict[str, str]] = {device_id: {"security_mode": "nosec"} for device_id in device_ids}
        for row in rows:
            device = cells[row["device_id"]]
            if row["purpose"] == "bootstrap":
                device["bootstrap_psk_identity"] = row["identity"]
                continue
            device.pop("psk_identity", None)
            device.pop("public_key", None)
            device["security_mode"] = row["mode"]
            if row["mode"] == "psk":
                device["psk_identity"] = row["identity"]
            else:
                device["public_key"] = pem_of(row["public_key"]).strip()
        return cells

    async def retire(self, tenant_id: UUID, device_id: UUID, purposes: Sequence[str], states: Sequence[str],
                     *, keep: UUID | None = None) -> list[Credential]:
        rows = await self.conn.fetch(
            f"""update device_credentials set state = 'retired', retired_at = now()
                where tenant_id = $1 and device_id = $2 and purpose = any($3::text[]) and state = any($4::text[])
                  and id is distinct from $5
                returning {_COLUMNS}""", tenant_id, device_id, list(purposes), list(states), keep)
        return [_credential(r) for r in rows]

    async def get(self, credential_id: UUID) -> Credential | None:
        row = await self.conn.fetchrow(f"select {_COLUMNS} from device_credentials where id = $1", credential_id)
        return _credential(row) if row else None

    async def make_active(self, credential_id: UUID) -> Credential | None:
        row = await self.conn.fetchrow(
            f"""update device_credentials set state = 'active' where id = $1 and state = 'pending'
                returning {_COLUMNS}""", credential_id)
        return _credential(row) if row else None

    # The directory's reads: system role, every city.

    async def known(self) -> list[asyncpg.Record]:
        return await self.conn.fetch(_KNOWN)

    async def known_by_ids(self, ids: list[UUID]) -> list[asyncpg.Record]:
        return await self.conn.fetch(f"{_KNOWN} and c.id = any($1::uuid[])", ids)

    async def known_by_identities(self, identities: list[str]) -> list[asyncpg.Record]:
        return await self.conn.fetch(f"{_KNOWN} and c.identity = any($1::text[])", identities)

    async def known_by_public_keys(self, keys: list[bytes]) -> list[asyncpg.Record]:
        return await self.conn.fetch(f"{_KNOWN} and c.public_key_xy = any($1::bytea[])", keys)

    async def of_disallowed_modes(self, identities: list[str], keys: list[bytes]) -> list[asyncpg.Record]:
        """Live credentials with these identities or keys whose city does not take their mode:
        why a device holding one is refused (the directory leaves them out)."""
        return await self.conn.fetch(
            """select c.identity, c.public_key_xy, c.mode, d.endpoint
               from device_credentials c join devices d on d.tenant_id = c.tenant_id and d.id = c.device_id
               join tenants t on t.id = c.tenant_id
               where c.state <> 'retired' and not c.mode = any(t.security_modes)
                 and (c.identity = any($1::text[]) or c.public_key_xy = any($2::bytea[]))""", identities, keys)

    async def taken(self, identities: list[str], public_keys: list[bytes]) -> set[str | bytes]:
        """Which of these PSK identities and public keys a credential that can authenticate holds."""
        rows = await self.conn.fetch(
            """select identity, public_key_xy from device_credentials
               where (identity = any($1::text[]) or public_key_xy = any($2::bytea[])) and state <> 'retired'""",
            identities, public_keys)
        return {r["identity"] if r["identity"] is not None else bytes(r["public_key_xy"]) for r in rows}

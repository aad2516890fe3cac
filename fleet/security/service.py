"""Setting, rotating and revoking devices' DTLS credentials (audited), and the bootstrap server's
issuing and activating of operational keys."""

from __future__ import annotations

import hashlib
import secrets
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from uuid import UUID

import asyncpg
import msgspec
import structlog
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from fleet.access.models import Permission, Principal
from fleet.audit.repository import AuditRepository
from fleet.audit.service import record, record_many
from fleet.db import Database
from fleet.errors import (Conflict, FieldError, NotConfigured, NotFound, PermissionDenied, SettingsError,
                          ValidationFailed)
from fleet.registrations.models import CREDENTIAL_CHANGED
from fleet.registrations.repository import RegistrationRepository
from fleet.security.crypto import CredentialCipher, KeyOwner, public_key_xy, server_public_key_der
from fleet.security.models import (GENERATED_KEY_BYTES, PURPOSES, Activation, Credential, CredentialSet,
                                   ImportedCredential, IssuedPsk, IssuedRpk, KnownCredential, ServerPublicKey,
                                   SetCredential, SetPsk)
from fleet.security.repository import CredentialRepository
from fleet.security.validation import parse_key_hex, parse_public_key, pem_of, psk_identity_errors, raise_if
from fleet.settings import SecuritySettings

log = structlog.get_logger(__name__)

# Identities Fleet makes up for the keys the bootstrap server issues.
ISSUED_IDENTITY_PREFIX = "fleet-"


def conflict_from(exc: asyncpg.UniqueViolationError) -> Conflict:
    """Which of the handshake's names is taken, never by whom: the holder may be in another city."""
    constraint = exc.constraint_name or ""
    if constraint.endswith("_identity"):
        return Conflict("this PSK identity is already in use by another device or credential",
                        [FieldError("identity", "already in use")])
    if constraint.endswith("_public_key"):
        return Conflict("this public key is already in use by another device or credential",
                        [FieldError("public_key", "already in use")])
    return Conflict("the device's credentials changed meanwhile; try again")


def _not_configured(what: str, exc: SettingsError) -> NotConfigured:
    return NotConfigured(f"this server is not configured to {what}: {exc} "
                         "(a configuration error for its operator; retrying will not help)")


def _audited(credential: Credential) -> dict:
    return msgspec.to_builtins(credential)


class SecurityService:
    def __init__(self, db: Database, settings: SecuritySettings) -> None:
        self.db = db
        self.settings = settings

    def cipher(self) -> CredentialCipher:
        try:
            return CredentialCipher(self.settings)
        except SettingsError as exc:
            raise _not_configured("store or read device keys", exc) from None

    def server_public_key(self) -> ServerPublicKey:
        """Fleet's DTLS public key for RPK devices (any authenticated caller may read it)."""
        try:
            der = server_public_key_der(self.settings)
        except SettingsError as exc:
            raise _not_configured("present a DTLS key", exc) from None
        return ServerPublicKey(pem_of(der), der.hex(), hashlib.sha256(der).hexdigest())

    async def credentials(self, principal: Principal, device_id: UUID) -> list[Credential]:
        """The device's credentials that can authenticate (active, pending), without keys."""
        if not principal.can(Permission.READ):
            raise PermissionDenied("reading device credentials is not allowed for this key")
        async with self.db.tenant_tx(principal.tenant_id, readonly=True) as conn:
            repo = CredentialRepository(conn)
            if await repo.device(principal.tenant_id, device_id) is None:
                raise NotFound(f"device {device_id} not found")
            return await repo.current(principal.tenant_id, device_id)

    async def set_credential(self, principal: Principal, device_id: UUID, command: SetCredential) -> CredentialSet:
        """Store the credential active at once, retiring the device's earlier ones of that purpose
        (their DTLS sessions end as every node's directory hears of it)."""
        if not principal.can(Permission.MANAGE_DEVICES):
            raise PermissionDenied("setting device credentials is not allowed for this key")
        generated = None
        if isinstance(command, SetPsk):
            errors = psk_identity_errors(command.identity)
            key = None
            if command.key_hex is None:
                key = secrets.token_bytes(GENERATED_KEY_BYTES)
                generated = key.hex()
            else:
                key, key_errors = parse_key_hex(command.key_hex)
                errors += key_errors
            raise_if(errors)
            imported = ImportedCredential(command.purpose, "psk", identity=command.identity, key=key)
        else:
            parsed, errors = parse_public_key(command.public_key)
            raise_if(errors)
            imported = ImportedCredential(command.purpose, "rpk", public_key_der=parsed[0], public_key_xy=parsed[1])
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = CredentialRepository(conn)
            device = await repo.device(principal.tenant_id, device_id)
            if device is None:
                raise NotFound(f"device {device_id} not found")
            if device["status"] == "decommissioned":
                raise Conflict(f"device {device_id} is decommissioned: it takes no credentials")
            modes = await repo.security_modes(principal.tenant_id)
            if imported.mode not in modes:
                raise ValidationFailed(f"this city does not allow {imported.mode} devices", [FieldError(
                    "mode", f"allowed: {', '.join(modes) or 'none'} (the city's security_modes)")])
            retired, credential = await self._replace(conn, repo, principal.tenant_id, device_id, imported)
            await record(conn, principal, "device.security.set", "device", device_id,
                         [_audited(c) for c in retired] or None, _audited(credential))
            if imported.purpose == "operational":
                # A device with a key registers with it: a plain registration ends, and so does one
                # made over coaps with the key just retired.
                await RegistrationRepository(conn).end_refused(principal.tenant_id, CREDENTIAL_CHANGED,
                                                               device_id=device_id, plain=True, secure=True)
        return CredentialSet(credential, generated)

    async def _replace(self, conn: asyncpg.Connection, repo: CredentialRepository, tenant_id: UUID,
                       device_id: UUID, imported: ImportedCredential) -> tuple[list[Credential], Credential]:
        credential_id = uuid.uuid4()
        sealed = (self.cipher().seal(KeyOwner(tenant_id, device_id, imported.purpose, credential_id), imported.key)
                  if imported.key is not None else (None, None))
        try:
            async with conn.transaction():  # a taken identity fails this alone, with a clear 409
                retired = await repo.retire(tenant_id, device_id, [imported.purpose], ["active", "pending"])
                credential = await repo.insert(
                    credential_id, tenant_id, device_id, imported.purpose, imported.mode, "active",
                    identity=imported.identity, key_ciphertext=sealed[0], key_nonce=sealed[1],
                    public_key=imported.public_key_der, public_key_xy=imported.public_key_xy)
        except asyncpg.UniqueViolationError as exc:
            raise conflict_from(exc) from None
        return retired, credential

    async def import_credentials(self, conn: asyncpg.Connection, principal: Principal,
                                 rows: Sequence[tuple[int, UUID, ImportedCredential]],
                                 nosec_rows: Sequence[int] = ()) -> None:
        """Store an import's credentials in its transaction, in one statement (the devices are
        new: nothing to retire); an identity or key another device holds names its row, and so
        does a row saying `nosec` in a city that refuses devices without DTLS."""
        if not rows and not nosec_rows:
            return
        repo = CredentialRepository(conn)
        allow_nosec, modes = await repo.policy(principal.tenant_id)
        refused = [FieldError("security_mode", f"this city allows {', '.join(modes) or 'none'}", number)
                   for number, _, imported in rows if imported.mode not in modes]
        if not allow_nosec:
            refused += [FieldError("security_mode", "this city refuses devices without DTLS "
                                   "(allow_nosec_devices is false): psk or rpk", number) for number in nosec_rows]
        if refused:
            raise ValidationFailed("import rejected; nothing was stored", sorted(refused, key=lambda e: e.row or 0))
        if not rows:
            return
        cipher = self.cipher() if any(imported.key is not None for _, _, imported in rows) else None
        stored = []
        for _, device_id, imported in rows:
            credential_id = uuid.uuid4()
            owner = KeyOwner(principal.tenant_id, device_id, imported.purpose, credential_id)
            ciphertext, nonce = cipher.seal(owner, imported.key) if imported.key is not None else (None, None)
            stored.append((credential_id, device_id, imported.purpose, imported.mode, imported.identity,
                           ciphertext, nonce, imported.public_key_der, imported.public_key_xy))
        try:
            async with conn.transaction():
                credentials = await repo.insert_many(principal.tenant_id, stored)
        except asyncpg.UniqueViolationError as exc:
            raise await _import_conflict(self.db, exc, rows) from None
        await record_many(conn, principal, "device.security.set", "device",
                          [_Audited(c.device_id, _audited(c)) for c in credentials])

    async def revoke(self, principal: Principal, device_id: UUID, purpose: str | None = None) -> list[Credential]:
        """Retire the device's credentials (of one purpose, or all): it can no longer complete a
        DTLS handshake, and its sessions end as every node's directory hears of it."""
        if not principal.can(Permission.MANAGE_DEVICES):
            raise PermissionDenied("revoking device credentials is not allowed for this key")
        if purpose is not None and purpose not in PURPOSES:
            raise ValidationFailed("invalid purpose", [FieldError("purpose", f"one of {', '.join(PURPOSES)}")])
        async with self.db.tenant_tx(principal.tenant_id) as conn:
            repo = CredentialRepository(conn)
            if await repo.device(principal.tenant_id, device_id) is None:
                raise NotFound(f"device {device_id} not found")
            retired = await repo.retire(principal.tenant_id, device_id, [purpose] if purpose else PURPOSES,
                                        ["active", "pending"])
            if retired:
                await record(conn, principal, "device.security.revoke", "device", device_id,
                             [_audited(c) for c in retired], None)
            if any(c.purpose == "operational" for c in retired):
                # Its registration over coaps was made with a key that no longer authenticates.
                await RegistrationRepository(conn).end_refused(principal.tenant_id, CREDENTIAL_CHANGED,
                                                               device_id=device_id, secure=True)
        return retired

    async def issue_operational_psk(self, tenant_id: UUID, device_id: UUID) -> IssuedPsk:
        """For the bootstrap server: a fresh identity and 16-byte key, stored pending (an earlier
        pending one is retired; the active one keeps working until the device registers with
        the new one, see `activate`). The plaintext key is returned this once."""
        identity = f"{ISSUED_IDENTITY_PREFIX}{secrets.token_hex(12)}"
        key = secrets.token_bytes(GENERATED_KEY_BYTES)
        credential_id = uuid.uuid4()
        ciphertext, nonce = self.cipher().seal(KeyOwner(tenant_id, device_id, "operational", credential_id), key)
        known = await self._issue_pending(credential_id, tenant_id, device_id, "psk", identity=identity,
                                          key_ciphertext=ciphertext, key_nonce=nonce)
        return IssuedPsk(identity, key, known)

    async def issue_operational_rpk(self, tenant_id: UUID, device_id: UUID) -> IssuedRpk:
        """For the bootstrap server of a city that takes no PSK: a fresh P-256 key pair, its
        public key stored pending like `issue_operational_psk`'s key. The private key is
        returned this once (the bootstrap writes it into the device, as Leshan's does) and
        Fleet keeps no copy."""
        private = ec.generate_private_key(ec.SECP256R1())
        public = private.public_key()
        public_der = public.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        private_der = private.private_bytes(serialization.Encoding.DER, serialization.PrivateFormat.PKCS8,
                                            serialization.NoEncryption())
        known = await self._issue_pending(uuid.uuid4(), tenant_id, device_id, "rpk", public_key=public_der,
                                          public_key_xy=public_key_xy(public))
        return IssuedRpk(public_der, private_der, known)

    async def _issue_pending(self, credential_id: UUID, tenant_id: UUID, device_id: UUID, mode: str,
                             **columns) -> KnownCredential:
        """Store an issued operational credential pending, retiring an earlier pending one."""
        async with self.db.system_tx() as conn:
            repo = CredentialRepository(conn)
            device = await repo.device(tenant_id, device_id)
            if device is None or device["status"] == "decommissioned":
                raise NotFound(f"device {device_id} not found")
            await repo.retire(tenant_id, device_id, ["operational"], ["pending"])
            credential = await repo.insert(credential_id, tenant_id, device_id, "operational", mode, "pending",
                                           **columns)
            await _system_audit(conn, tenant_id, "device.security.issue", device_id, None, _audited(credential))
        log.info("operational credential issued", mode=mode, device_id=str(device_id),
                 credential_id=str(credential_id))
        return KnownCredential(credential_id, device_id, tenant_id, device["endpoint"], "operational", mode, "pending")

    async def activate(self, credential: KnownCredential) -> Activation | None:
        """A device registered with its pending credential: it becomes active and the active one
        of the same purpose is retired. None when it was no longer pending (already activated
        by another node, or retired meanwhile)."""
        async with self.db.system_tx() as conn:
            repo = CredentialRepository(conn)
            current = await repo.get(credential.credential_id)
            if current is None or current.state != "pending":
                return None
            retired = await repo.retire(current.tenant_id, current.device_id, [current.purpose], ["active"],
                                        keep=current.id)
            activated = await repo.make_active(current.id)
            if activated is None:
                return None
            await _system_audit(conn, current.tenant_id, "device.security.activate", current.device_id,
                                [_audited(c) for c in retired] or None, _audited(activated))
        return Activation(KnownCredential(credential.credential_id, credential.device_id, credential.tenant_id,
                                          credential.endpoint, credential.purpose, credential.mode, "active"),
                          [c.id for c in retired])


@dataclass(frozen=True, slots=True)
class _Audited:
    """An import's audit entry (`after`): the device's id and its credential, without key."""

    id: UUID
    credential: dict


async def _import_conflict(db: Database, exc: asyncpg.UniqueViolationError,
                           rows: Sequence[tuple[int, UUID, ImportedCredential]]) -> Conflict:
    """Which rows hold a taken identity or key. Under row-level security PostgreSQL's error names
    no value, so the import's own names are looked up across cities: the caller learns only
    which of them are taken, as the 409 says anyway."""
    async with db.system_tx() as conn:
        taken = await CredentialRepository(conn).taken(
            [c.identity for _, _, c in rows if c.identity is not None],
            [c.public_key_xy for _, _, c in rows if c.public_key_xy is not None])
    errors = []
    for number, _, imported in rows:
        if imported.identity is not None and imported.identity in taken:
            column = "bootstrap_psk_identity" if imported.purpose == "bootstrap" else "psk_identity"
            errors.append(FieldError(column, "already in use", number))
        elif imported.public_key_xy is not None and imported.public_key_xy in taken:
            errors.append(FieldError("public_key", "already in use", number))
    return Conflict("import rejected; nothing was stored",
                    errors or [FieldError(e.field, e.message) for e in conflict_from(exc).errors])


async def _system_audit(conn: asyncpg.Connection, tenant_id: UUID, action: str, device_id: UUID,
                        before: object, after: object) -> None:
    """The device side acts for no key: its entries name the bootstrap server."""
    await AuditRepository(conn).append(tenant_id, None, "bootstrap", action, "device", str(device_id),
                                       before, after, None)

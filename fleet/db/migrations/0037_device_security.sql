-- Device security: each city's policy (may devices come without DTLS, which secure modes it
-- takes) and each device's credentials (a PSK or a raw public key), which the coaps listener
-- looks up from memory (fleet.security.directory) during the DTLS handshake.

-- Cities that exist at upgrade keep their devices working (they registered over plain CoAP):
-- the column is added with true for them, then new cities refuse NoSec unless told otherwise.
alter table tenants add column allow_nosec_devices boolean not null default true;
alter table tenants alter column allow_nosec_devices set default false;
alter table tenants add column security_modes text[] not null default '{psk,rpk}'
    check (security_modes <@ '{psk,rpk}'::text[]);

-- A PSK's key is stored encrypted (AES-GCM under FLEET_CREDENTIALS_KEY, the row's id as
-- associated data, so a ciphertext copied onto another row does not decrypt); a raw public key
-- is public: its SubjectPublicKeyInfo, and x||y as tinydtls hands it over in the handshake.
create table device_credentials (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       uuid not null references tenants (id),
    device_id       uuid not null,
    -- bootstrap: the factory credential a device asks the bootstrap server (/bs) with;
    -- operational: the one it registers with.
    purpose         text not null check (purpose in ('operational', 'bootstrap')),
    mode            text not null check (mode in ('psk', 'rpk')),
    identity        text check (octet_length(identity) between 1 and 128),
    key_ciphertext  bytea,
    key_nonce       bytea check (length(key_nonce) = 12),
    public_key      bytea,
    public_key_xy   bytea check (length(public_key_xy) = 64),
    -- pending: issued by the bootstrap server, active once the device first registers with it
    -- (the active one it replaces is then retired); retired credentials never authenticate.
    state           text not null check (state in ('pending', 'active', 'retired')),
    version         integer not null check (version >= 1),
    created_at      timestamptz not null default now(),
    retired_at      timestamptz,
    check (case mode
               when 'psk' then identity is not null and key_ciphertext is not null and key_nonce is not null
                               and public_key is null and public_key_xy is null
               else identity is null and key_ciphertext is null and key_nonce is null
                    and public_key is not null and public_key_xy is not null
           end),
    check ((state = 'retired') = (retired_at is not null)),
    constraint device_credentials_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id) on delete cascade
);
create unique index device_credentials_tenant_id on device_credentials (tenant_id, id);
-- The handshake names an identity or a key before anyone knows the city: both are unique across
-- every city among the credentials that can still authenticate.
create unique index device_credentials_identity on device_credentials (identity)
    where state <> 'retired' and identity is not null;
create unique index device_credentials_public_key on device_credentials (public_key_xy)
    where state <> 'retired' and public_key_xy is not null;
-- At most one active and one pending credential per device and purpose.
create unique index device_credentials_current on device_credentials (tenant_id, device_id, purpose, state)
    where state <> 'retired';
-- The directory loads what can authenticate, every node at start.
create index device_credentials_live on device_credentials (id) where state <> 'retired';

alter table device_credentials enable row level security;
alter table device_credentials force row level security;
select fleet_wall('device_credentials');

-- Every node's directory hears of each change: one notification per changed row (the id),
-- or one '*' (load everything again) for a statement changing many, such as an import.
create function fleet_credentials_notify() returns trigger
    language plpgsql as $$
begin
    if (select count(*) from changed) > 100 then
        perform pg_notify('fleet_credentials', '*');
    else
        perform pg_notify('fleet_credentials', c.id::text) from changed c;
    end if;
    return null;
end $$;
create trigger device_credentials_inserted after insert on device_credentials
    referencing new table as changed for each statement execute function fleet_credentials_notify();
create trigger device_credentials_updated after update on device_credentials
    referencing new table as changed for each statement execute function fleet_credentials_notify();
create trigger device_credentials_deleted after delete on device_credentials
    referencing old table as changed for each statement execute function fleet_credentials_notify();

-- A city that stops allowing a mode stops its devices of that mode at once: the directories
-- hold only credentials of allowed modes, and load everything again when a city's modes change.
create function fleet_security_modes_notify() returns trigger
    language plpgsql as $$
begin
    perform pg_notify('fleet_credentials', '*');
    return null;
end $$;
create trigger tenants_security_modes_changed after update of security_modes on tenants
    for each statement execute function fleet_security_modes_notify();

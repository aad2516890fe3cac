-- Foundation: cities (tenants), API keys, the device registry, groups and the audit log.
-- Every tenant-owned table carries tenant_id and a row-level security policy keyed on the
-- transaction setting fleet.tenant_id, so a forgotten WHERE cannot leak another city's rows.

create function fleet_current_tenant() returns uuid
    language sql stable
    as $$ select nullif(current_setting('fleet.tenant_id', true), '')::uuid $$;

create table tenants (
    id          uuid primary key default gen_random_uuid(),
    slug        text not null unique check (slug ~ '^[a-z0-9][a-z0-9-]{1,62}$'),
    name        text not null check (length(name) between 1 and 200),
    timezone    text not null,
    created_at  timestamptz not null default now()
);

create table api_keys (
    id            uuid primary key default gen_random_uuid(),
    tenant_id     uuid not null references tenants (id),
    name          text not null default '' check (length(name) <= 200),
    role          text not null check (role in ('admin', 'operator', 'crew', 'viewer')),
    prefix        text not null,
    key_hash      bytea not null unique,
    created_at    timestamptz not null default now(),
    created_by    uuid references api_keys (id),
    revoked_at    timestamptz,
    last_used_at  timestamptz
);
create index api_keys_tenant on api_keys (tenant_id, created_at);

create table devices (
    id                uuid primary key default gen_random_uuid(),
    -- Stable, gap-tolerant order for cursor pagination; ids are random.
    seq               bigint generated always as identity unique,
    tenant_id         uuid not null references tenants (id),
    kind              text not null check (kind in ('streetlight', 'waste_bin', 'wifi_ap')),
    endpoint          text not null unique,
    serial            text,
    manufacturer      text,
    model             text,
    firmware_version  text,
    lat               double precision not null check (lat between -90 and 90),
    lon               double precision not null check (lon between -180 and 180),
    district          text,
    address           text,
    installed_at      timestamptz,
    status            text not null default 'provisioned'
                      check (status in ('provisioned', 'online', 'offline', 'maintenance', 'decommissioned')),
    tags              text[] not null default '{}',
    attributes        jsonb not null default '{}',
    created_at        timestamptz not null default now(),
    updated_at        timestamptz not null default now(),
    decommissioned_at timestamptz
);
create unique index devices_serial on devices (tenant_id, serial) where serial is not null;
create index devices_tenant_seq on devices (tenant_id, seq);
create index devices_kind on devices (tenant_id, kind, seq);
create index devices_status on devices (tenant_id, status, seq);
create index devices_district on devices (tenant_id, district, seq);
create index devices_firmware on devices (tenant_id, firmware_version, seq);
create index devices_tags on devices using gin (tags);
create index devices_position on devices using gist (point(lon, lat));

create table device_groups (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references tenants (id),
    name        text not null check (length(name) between 1 and 200),
    description text not null default '',
    -- null for a group of static members; otherwise the saved device filter.
    filter      jsonb,
    created_at  timestamptz not null default now(),
    updated_at  timestamptz not null default now(),
    unique (tenant_id, name)
);

create table device_group_members (
    tenant_id  uuid not null references tenants (id),
    group_id   uuid not null references device_groups (id) on delete cascade,
    device_id  uuid not null references devices (id),
    added_at   timestamptz not null default now(),
    primary key (group_id, device_id)
);
create index device_group_members_device on device_group_members (device_id);

create table audit_log (
    id           bigint generated always as identity primary key,
    tenant_id    uuid not null references tenants (id),
    at           timestamptz not null default now(),
    api_key_id   uuid,
    actor        text not null,
    action       text not null,
    entity_type  text not null,
    entity_id    text,
    before       jsonb,
    after        jsonb,
    request_id   text
);
create index audit_log_tenant on audit_log (tenant_id, id desc);
create index audit_log_entity on audit_log (tenant_id, entity_type, entity_id, id desc);

alter table tenants enable row level security;
create policy tenant_wall on tenants using (id = fleet_current_tenant());

alter table api_keys enable row level security;
create policy tenant_wall on api_keys using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());

alter table devices enable row level security;
create policy tenant_wall on devices using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());

alter table device_groups enable row level security;
create policy tenant_wall on device_groups using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());

alter table device_group_members enable row level security;
create policy tenant_wall on device_group_members using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());

alter table audit_log enable row level security;
create policy tenant_wall on audit_log using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());

-- Endpoint names are unique across all cities (devices register by name alone), yet a city
-- must not read another's rows. This answers only "which of these names are taken".
create function fleet_endpoints_taken(names text[]) returns table (endpoint text)
    language sql stable security definer set search_path = public
    as $$ select d.endpoint from devices d where d.endpoint = any(names) $$;

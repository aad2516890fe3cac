-- Dimming schedules modelled on TALQ: control programs, calendars, their assignment to groups and
-- districts, overrides, the level the scheduler last commanded each light, and the fencing epoch
-- of the node that schedules.

create table lighting_programs (
    id             uuid primary key default gen_random_uuid(),
    tenant_id      uuid not null references tenants (id),
    name           text not null check (length(name) between 1 and 200),
    description    text not null default '',
    -- [{"id", "anchor": "local_time" | "sunset" | "sunrise", "local_time"?, "offset_minutes"?,
    --   "dimming_level"}], validated by fleet.lighting.models.ControlProgram before it is stored.
    switch_points  jsonb not null,
    created_at     timestamptz not null default now(),
    updated_at     timestamptz not null default now(),
    unique (tenant_id, name)
);

create table lighting_calendars (
    id                  uuid primary key default gen_random_uuid(),
    tenant_id           uuid not null references tenants (id),
    name                text not null check (length(name) between 1 and 200),
    description         text not null default '',
    default_program_id  uuid not null references lighting_programs (id),
    -- [{"id", "program_id", "date_range"?, "weekdays"?, "dates"?}] in the order they are tried,
    -- validated by fleet.lighting.models.Calendar before it is stored.
    rules               jsonb not null default '[]',
    created_at          timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    unique (tenant_id, name)
);

-- Every program a calendar uses (its default and its rules'), so a program in use cannot be deleted.
create table lighting_calendar_programs (
    tenant_id    uuid not null references tenants (id),
    calendar_id  uuid not null references lighting_calendars (id) on delete cascade,
    program_id   uuid not null references lighting_programs (id),
    primary key (calendar_id, program_id)
);
create index lighting_calendar_programs_program on lighting_calendar_programs (program_id);

-- A calendar for a group or a district; a group or district has at most one. A light in several
-- assigned scopes follows the most specific (see fleet.lighting.plan).
create table lighting_assignments (
    id           uuid primary key default gen_random_uuid(),
    tenant_id    uuid not null references tenants (id),
    calendar_id  uuid not null references lighting_calendars (id),
    group_id     uuid references device_groups (id) on delete cascade,
    district     text check (length(district) between 1 and 300),
    created_at   timestamptz not null default now(),
    check ((group_id is null) <> (district is null))
);
create unique index lighting_assignments_group on lighting_assignments (tenant_id, group_id)
    where group_id is not null;
create unique index lighting_assignments_district on lighting_assignments (tenant_id, district)
    where district is not null;
create index lighting_assignments_calendar on lighting_assignments (calendar_id);

create table lighting_overrides (
    id             uuid primary key default gen_random_uuid(),
    tenant_id      uuid not null references tenants (id),
    -- The scope: exactly one of a district, a group or listed devices.
    district       text check (length(district) between 1 and 300),
    group_id       uuid references device_groups (id) on delete cascade,
    device_ids     uuid[] check (cardinality(device_ids) between 1 and 10000),
    dimming_level  integer not null check (dimming_level between 0 and 100),
    priority       integer not null default 0,
    starts_at      timestamptz not null,
    ends_at        timestamptz not null,
    reason         text not null default '',
    created_by     uuid,
    -- clock_timestamp, not now(): two overrides created in one transaction still have an order.
    created_at     timestamptz not null default clock_timestamp(),
    cancelled_at   timestamptz,
    check (num_nonnulls(district, group_id, device_ids) = 1),
    check (ends_at > starts_at)
);
create index lighting_overrides_open on lighting_overrides (tenant_id, ends_at) where cancelled_at is null;

-- The level the scheduler last commanded each light: compared with what the schedule says now,
-- it makes every scheduler run idempotent and gives catch-up after a restart.
create table lighting_targets (
    device_id      uuid primary key references devices (id),
    tenant_id      uuid not null references tenants (id),
    dimming_level  integer not null check (dimming_level between 0 and 100),
    path           text not null,
    -- When the schedule set this level (a switch point, an override's start or end).
    since          timestamptz not null,
    -- The command carrying it; no foreign key, commands may be purged before targets.
    command_id     uuid,
    updated_at     timestamptz not null default now()
);
create index lighting_targets_tenant on lighting_targets (tenant_id);

-- One row: the epoch of the current scheduler leader. Each new leader bumps it; a scheduler run
-- reads it FOR SHARE first and gives up if it changed, so a deposed leader cannot commit.
create table scheduler_leadership (
    singleton   boolean primary key default true check (singleton),
    epoch       bigint not null,
    node        text not null,
    elected_at  timestamptz not null default now()
);
insert into scheduler_leadership (epoch, node) values (0, '');

alter table lighting_programs enable row level security;
create policy tenant_wall on lighting_programs using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());
alter table lighting_calendars enable row level security;
create policy tenant_wall on lighting_calendars using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());
alter table lighting_calendar_programs enable row level security;
create policy tenant_wall on lighting_calendar_programs using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());
alter table lighting_assignments enable row level security;
create policy tenant_wall on lighting_assignments using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());
alter table lighting_overrides enable row level security;
create policy tenant_wall on lighting_overrides using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());
alter table lighting_targets enable row level security;
create policy tenant_wall on lighting_targets using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());

-- The crews' working day: the event log every node reads, alarms, crews and work orders.
-- Capabilities that grow these add their own later migrations; every table joins the wall here.

-- Events: one row per change people watch (alarm, work order, device status, command outcome).
-- `xid` orders the log: rows are read only from transactions older than every running one
-- (pg_snapshot_xmin), in (xid, id) order, so a reader never skips a row that commits late and
-- never sees one twice. The trigger wakes every node in the same transaction.
create table events (
    tenant_id     uuid not null references tenants (id),
    id            bigint generated always as identity,
    xid           xid8 not null default pg_current_xact_id(),
    at            timestamptz not null default now(),
    kind          text not null check (kind ~ '^[a-z_]+\.[a-z_]+$'),
    subject_type  text not null,
    subject_id    text not null,
    payload       jsonb not null default '{}',
    primary key (tenant_id, id)
);
create index events_order on events (tenant_id, xid, id);
create index events_subject on events (tenant_id, subject_type, subject_id, xid);
create index events_at on events (at);

create function fleet_event_notify() returns trigger
    language plpgsql as $$
begin
    -- Only the position travels: NOTIFY payloads are small, and a listener reads the row anyway.
    perform pg_notify('fleet_events', new.tenant_id::text);
    return null;
end $$;
create trigger events_notify after insert on events
    for each row execute function fleet_event_notify();

-- Alarms: at most one open (active or acknowledged) alarm per (device, type); a repeat raises
-- count and last_seen. Cleared alarms stay as history.
create table alarms (
    id               uuid primary key default gen_random_uuid(),
    seq              bigint generated always as identity unique,
    tenant_id        uuid not null references tenants (id),
    device_id        uuid not null,
    type             text not null check (type ~ '^[a-z_]+$'),
    severity         text not null check (severity in ('critical', 'major', 'minor', 'warning')),
    status           text not null default 'active' check (status in ('active', 'acknowledged', 'cleared')),
    count            integer not null default 1 check (count >= 1),
    first_seen       timestamptz not null,
    last_seen        timestamptz not null,
    -- Hysteresis: when the condition was first seen absent; cleared once it stays absent.
    clearing_since   timestamptz,
    value            jsonb,
    detail           text not null default '',
    source           text not null default 'device' check (source in ('device', 'citizen', 'operator')),
    acknowledged_at  timestamptz,
    acknowledged_by  text,
    acknowledge_note text,
    cleared_at       timestamptz,
    cleared_by       text,
    clear_reason     text check (clear_reason in ('condition', 'manual', 'work_order', 'decommissioned')),
    -- A clear by a work order is proven when the device next reports the condition absent.
    verified_at      timestamptz,
    version          integer not null default 1,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    constraint alarms_device_same_city foreign key (tenant_id, device_id) references devices (tenant_id, id),
    constraint alarms_cleared_consistent check ((status = 'cleared') = (cleared_at is not null))
);
create unique index alarms_tenant_id on alarms (tenant_id, id);
create unique index alarms_one_open on alarms (tenant_id, device_id, type) where status <> 'cleared';
create index alarms_open on alarms (tenant_id, status, severity, seq) where status <> 'cleared';
create index alarms_tenant_seq on alarms (tenant_id, seq);
-- The alarm list's default page (open alarms, newest first): alarms_open leads with status and
-- severity, so "active or acknowledged by seq" would walk the whole history of cleared alarms.
create index alarms_open_seq on alarms (tenant_id, seq) where status <> 'cleared';
create index alarms_device on alarms (tenant_id, device_id, seq);
create index alarms_awaiting_proof on alarms (tenant_id, device_id, type)
    where clear_reason = 'work_order' and verified_at is null;

-- Thresholds and tolerances: one row per city (group_id null) and one per group overriding it.
-- `settings` holds only what differs from the documented defaults.
create table alarm_settings (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references tenants (id),
    group_id    uuid,
    settings    jsonb not null default '{}',
    version     integer not null default 1,
    updated_at  timestamptz not null default now(),
    constraint alarm_settings_group_same_city
        foreign key (tenant_id, group_id) references device_groups (tenant_id, id) on delete cascade
);
create unique index alarm_settings_city on alarm_settings (tenant_id) where group_id is null;
create unique index alarm_settings_group on alarm_settings (tenant_id, group_id) where group_id is not null;

-- Shelving silences one alarm, or every alarm of a device, until a time.
create table alarm_shelves (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references tenants (id),
    alarm_id    uuid,
    device_id   uuid,
    until       timestamptz not null,
    reason      text not null default '' check (length(reason) <= 2000),
    created_by  text not null,
    created_at  timestamptz not null default now(),
    constraint alarm_shelves_alarm_same_city foreign key (tenant_id, alarm_id) references alarms (tenant_id, id),
    constraint alarm_shelves_device_same_city foreign key (tenant_id, device_id) references devices (tenant_id, id),
    constraint alarm_shelves_target check ((alarm_id is null) <> (device_id is null))
);
create index alarm_shelves_device on alarm_shelves (tenant_id, device_id, until);
create index alarm_shelves_alarm on alarm_shelves (tenant_id, alarm_id, until);

-- Crews: the teams in the street; crew-role keys belong to one.
create table crews (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references tenants (id),
    name        text not null check (length(name) between 1 and 200),
    created_at  timestamptz not null default now(),
    unique (tenant_id, name)
);
create unique index crews_tenant_id on crews (tenant_id, id);

alter table api_keys
    drop constraint api_keys_role_check,
    add constraint api_keys_role_check check (role in ('admin', 'operator', 'crew', 'viewer', 'reporter')),
    add column crew_id uuid,
    add constraint api_keys_crew_same_city foreign key (tenant_id, crew_id) references crews (tenant_id, id),
    add constraint api_keys_crew_only_for_crews check (crew_id is null or role = 'crew');

-- Work orders: what a crew goes out to do.
create table work_orders (
    id               uuid primary key default gen_random_uuid(),
    seq              bigint generated always as identity unique,
    tenant_id        uuid not null references tenants (id),
    type             text not null check (type in ('repair_lamp', 'replace_controller', 'empty_bin',
                                                   'clean_or_repair_bin', 'inspect_access_point', 'other')),
    priority         text not null check (priority in ('low', 'medium', 'high', 'urgent')),
    status           text not null default 'new'
                     check (status in ('new', 'assigned', 'en_route', 'in_progress', 'done', 'cannot_fix',
                                       'cancelled', 'verified', 'reopened')),
    source           text not null default 'operator' check (source in ('operator', 'alarm', 'citizen')),
    lat              double precision not null check (lat between -90 and 90),
    lon              double precision not null check (lon between -180 and 180),
    crew_id          uuid,
    alarm_id         uuid,
    due_by           timestamptz,
    notes            text not null default '' check (length(notes) <= 10000),
    resolution_code  text,
    time_spent_minutes integer check (time_spent_minutes >= 0),
    created_by       text not null,
    created_at       timestamptz not null default now(),
    updated_at       timestamptz not null default now(),
    closed_at        timestamptz,
    verified_at      timestamptz,
    version          integer not null default 1,
    constraint work_orders_crew_same_city foreign key (tenant_id, crew_id) references crews (tenant_id, id),
    constraint work_orders_alarm_same_city foreign key (tenant_id, alarm_id) references alarms (tenant_id, id)
);
create unique index work_orders_tenant_id on work_orders (tenant_id, id);
create index work_orders_tenant_seq on work_orders (tenant_id, seq);
create index work_orders_crew on work_orders (tenant_id, crew_id, status);
create index work_orders_position on work_orders using gist (point(lon, lat));
create index work_orders_alarm on work_orders (tenant_id, alarm_id);

create table work_order_devices (
    tenant_id      uuid not null references tenants (id),
    work_order_id  uuid not null,
    device_id      uuid not null,
    primary key (work_order_id, device_id),
    constraint work_order_devices_order_same_city
        foreign key (tenant_id, work_order_id) references work_orders (tenant_id, id) on delete cascade,
    constraint work_order_devices_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id)
);
create index work_order_devices_device on work_order_devices (tenant_id, device_id);

-- The wall: row-level security enabled and forced (the owner too), then fleet_wall's policies
-- (tenant_wall for fleet_app, system_access for fleet_system).
alter table events enable row level security;
alter table events force row level security;
select fleet_wall('events');
alter table alarms enable row level security;
alter table alarms force row level security;
select fleet_wall('alarms');
alter table alarm_settings enable row level security;
alter table alarm_settings force row level security;
select fleet_wall('alarm_settings');
alter table alarm_shelves enable row level security;
alter table alarm_shelves force row level security;
select fleet_wall('alarm_shelves');
alter table crews enable row level security;
alter table crews force row level security;
select fleet_wall('crews');
alter table work_orders enable row level security;
alter table work_orders force row level security;
select fleet_wall('work_orders');
alter table work_order_devices enable row level security;
alter table work_order_devices force row level security;
select fleet_wall('work_order_devices');

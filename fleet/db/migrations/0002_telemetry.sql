-- Devices online: LwM2M registrations, the time-partitioned telemetry store and the latest
-- state (shadow) of every device.

create table registrations (
    -- The id handed to the client in Location-Path /rd/{id}.
    id              text primary key,
    device_id       uuid not null unique references devices (id),
    tenant_id       uuid not null references tenants (id),
    endpoint        text not null,
    address         text not null,
    port            integer not null check (port between 1 and 65535),
    lifetime_s      integer not null check (lifetime_s > 0),
    binding         text not null,
    queue_mode      boolean not null default false,
    lwm2m_version   text not null,
    object_links    text not null,
    sms_number      text,
    -- The Fleet node (process) whose socket the device talks to; downlink goes through it.
    node            text not null,
    registered_at   timestamptz not null default now(),
    updated_at      timestamptz not null default now(),
    expires_at      timestamptz not null
);
create index registrations_expiry on registrations (expires_at);
create index registrations_address on registrations (address, port);
create index registrations_tenant on registrations (tenant_id);

-- One row per value reported; exactly one of the value columns is set.
create table telemetry (
    tenant_id   uuid not null,
    device_id   uuid not null,
    time        timestamptz not null,
    path        text not null,
    v_num       double precision,
    v_text      text,
    v_bool      boolean,
    received_at timestamptz not null default now()
) partition by range (time);
-- Catches readings outside the prepared partitions (a device with a wild clock) so none is lost.
create table telemetry_default partition of telemetry default;
create index telemetry_series on telemetry (device_id, path, time);

create table device_state (
    device_id   uuid not null references devices (id),
    path        text not null,
    tenant_id   uuid not null,
    time        timestamptz not null,
    v_num       double precision,
    v_text      text,
    v_bool      boolean,
    updated_at  timestamptz not null default now(),
    primary key (device_id, path)
);
create index device_state_tenant on device_state (tenant_id);

-- Creates the daily partitions of telemetry from `first_day` for `days` days; idempotent.
create function fleet_ensure_telemetry_partitions(first_day date, days integer) returns integer
    language plpgsql as $$
declare
    day date;
    created integer := 0;
    name text;
begin
    for i in 0 .. days - 1 loop
        day := first_day + i;
        name := 'telemetry_' || to_char(day, 'YYYYMMDD');
        if to_regclass(name) is null then
            begin
                execute format(
                    'create table %I partition of telemetry for values from (%L) to (%L)',
                    name, day::text || ' 00:00:00+00', (day + 1)::text || ' 00:00:00+00');
                created := created + 1;
            exception
                when duplicate_table then
                    null;  -- another node created it first
                when check_violation then
                    -- The default partition already holds rows of that day; they stay there
                    -- (still queried through the parent) rather than block ingest.
                    raise warning 'telemetry partition % skipped: default partition holds its rows', name;
            end;
        end if;
    end loop;
    return created;
end $$;

-- Drops daily partitions wholly before `cutoff` and default-partition rows older than it.
create function fleet_drop_telemetry_before(cutoff date) returns integer
    language plpgsql as $$
declare
    part record;
    dropped integer := 0;
begin
    for part in
        select c.relname from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        join pg_class p on p.oid = i.inhparent
        where p.relname = 'telemetry' and c.relname ~ '^telemetry_[0-9]{8}$'
          and to_date(substr(c.relname, 11), 'YYYYMMDD') < cutoff
    loop
        execute format('drop table %I', part.relname);
        dropped := dropped + 1;
    end loop;
    delete from telemetry_default where time < (cutoff::text || ' 00:00:00+00')::timestamptz;
    return dropped;
end $$;

alter table registrations enable row level security;
create policy tenant_wall on registrations using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());
alter table telemetry enable row level security;
create policy tenant_wall on telemetry using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());
alter table device_state enable row level security;
create policy tenant_wall on device_state using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());

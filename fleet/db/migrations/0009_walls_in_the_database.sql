-- Walls that hold inside the database. From here on Fleet's objects belong to fleet_owner (no
-- login), the REST API's tenant transactions run as the login fleet_app (one city at a time,
-- member of nothing), and cross-city work as the login fleet_system (fleet/db/roles.py).
-- Row-level security is forced on every tenant-owned table, so even the owner is walled; each
-- table has two policies: tenant_wall for fleet_app, system_access for fleet_system and the
-- owner (migrations that move rows run as the owner).

-- How a table joins the wall; every later migration that creates a tenant-owned table calls it
-- in the same migration.
create function fleet_wall(rel regclass) returns void
    language plpgsql as $$
declare
    key text := case when rel = 'tenants'::regclass then 'id' else 'tenant_id' end;
begin
    execute format('alter table %s enable row level security', rel);
    execute format('alter table %s force row level security', rel);
    execute format('drop policy if exists tenant_wall on %s', rel);
    execute format('drop policy if exists system_access on %s', rel);
    execute format(
        'create policy tenant_wall on %s to fleet_app using (%I = fleet_current_tenant()) '
        'with check (%I = fleet_current_tenant())', rel, key, key);
    execute format(
        'create policy system_access on %s to fleet_system, fleet_owner using (true) with check (true)', rel);
end $$;

select fleet_wall(c.oid::regclass)
from pg_class c join pg_namespace n on n.oid = c.relnamespace
where n.nspname = 'public' and c.relkind in ('r', 'p') and not c.relispartition
  and (c.relname = 'tenants' or exists (
      select 1 from pg_attribute a where a.attrelid = c.oid and a.attname = 'tenant_id' and not a.attisdropped));

-- Every security definer function names its search path with pg_temp last: otherwise a
-- caller's temporary table of the same name would be found first (both logins may create
-- temporary tables; the telemetry writer does). public comes first so the partitions they
-- create land there; only the owner may create anything in it.

-- Partitions are tables of their own: walled like their parent, and granted to no login, so
-- they are reachable only through the parent (whose grants and policies then apply).
create function fleet_seal_telemetry_partitions() returns integer
    language plpgsql security definer set search_path = public, pg_catalog, pg_temp as $$
declare
    part record;
    sealed integer := 0;
begin
    -- Nodes starting together create and seal partitions at once; one at a time, or each
    -- waits on a partition the other just locked (TelemetryRepository.ensure_partitions).
    perform pg_advisory_xact_lock(hashtext('fleet_telemetry_partitions'));
    for part in
        select c.oid::regclass as rel, c.relforcerowsecurity as forced from pg_inherits i
        join pg_class c on c.oid = i.inhrelid
        where i.inhparent = 'telemetry'::regclass
    loop
        execute format('revoke all on %s from public, fleet_app, fleet_system', part.rel);
        if not part.forced then
            perform fleet_wall(part.rel);
            sealed := sealed + 1;
        end if;
    end loop;
    return sealed;
end $$;

-- Partition upkeep runs from the device side (fleet_system), which owns nothing and so may not
-- create or drop tables: these run as the owner. Whoever creates partitions seals them next
-- (TelemetryRepository.ensure_partitions).
alter function fleet_ensure_telemetry_partitions(date, integer) security definer set search_path = public, pg_catalog, pg_temp;
alter function fleet_drop_telemetry_before(date) security definer set search_path = public, pg_catalog, pg_temp;

revoke all on function fleet_wall(regclass) from public;
revoke all on function fleet_seal_telemetry_partitions() from public;
grant execute on function fleet_seal_telemetry_partitions() to fleet_system;
revoke all on function fleet_ensure_telemetry_partitions(date, integer) from public;
revoke all on function fleet_drop_telemetry_before(date) from public;
grant execute on function fleet_ensure_telemetry_partitions(date, integer) to fleet_system;
grant execute on function fleet_drop_telemetry_before(date) to fleet_system;
-- Imports ask whether endpoint names are taken in any city (0001): the one cross-city
-- question a tenant transaction may put.
alter function fleet_endpoints_taken(text[]) set search_path = public, pg_catalog, pg_temp;
revoke all on function fleet_endpoints_taken(text[]) from public;
grant execute on function fleet_endpoints_taken(text[]) to fleet_app, fleet_system;

-- The scheduler's fence reads the leader epoch inside tenant transactions; locking the row for
-- share needs more than SELECT, which the app login must not have on the leadership.
create function fleet_scheduler_epoch() returns bigint
    language sql security definer set search_path = public, pg_catalog, pg_temp
    as $$ select epoch from scheduler_leadership for share $$;
revoke all on function fleet_scheduler_epoch() from public;
grant execute on function fleet_scheduler_epoch() to fleet_app, fleet_system;

-- Composite (tenant_id, id) keys wherever one city's row refers to another row: foreign keys
-- ignore row-level security, so the database itself must refuse a reference across cities.
create unique index api_keys_tenant_id on api_keys (tenant_id, id);
create unique index lighting_programs_tenant_id on lighting_programs (tenant_id, id);
create unique index lighting_calendars_tenant_id on lighting_calendars (tenant_id, id);

alter table api_keys
    drop constraint api_keys_created_by_fkey,
    add constraint api_keys_created_by_same_city
        foreign key (tenant_id, created_by) references api_keys (tenant_id, id);
alter table registrations
    drop constraint registrations_device_id_fkey,
    add constraint registrations_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id);
alter table device_state
    drop constraint device_state_device_id_fkey,
    add constraint device_state_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id);
alter table observations
    drop constraint observations_device_id_fkey,
    add constraint observations_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id);
alter table device_group_members
    drop constraint device_group_members_group_id_fkey,
    drop constraint device_group_members_device_id_fkey;
alter table lighting_calendars
    drop constraint lighting_calendars_default_program_id_fkey,
    add constraint lighting_calendars_default_program_same_city
        foreign key (tenant_id, default_program_id) references lighting_programs (tenant_id, id);
alter table lighting_calendar_programs
    drop constraint lighting_calendar_programs_program_id_fkey,
    drop constraint lighting_calendar_programs_calendar_id_fkey,
    add constraint lighting_calendar_programs_program_same_city
        foreign key (tenant_id, program_id) references lighting_programs (tenant_id, id),
    add constraint lighting_calendar_programs_calendar_same_city
        foreign key (tenant_id, calendar_id) references lighting_calendars (tenant_id, id) on delete cascade;
alter table lighting_assignments
    drop constraint lighting_assignments_calendar_id_fkey,
    drop constraint lighting_assignments_group_id_fkey,
    add constraint lighting_assignments_calendar_same_city
        foreign key (tenant_id, calendar_id) references lighting_calendars (tenant_id, id),
    add constraint lighting_assignments_group_same_city
        foreign key (tenant_id, group_id) references device_groups (tenant_id, id) on delete cascade;
alter table lighting_overrides
    drop constraint lighting_overrides_group_id_fkey,
    add constraint lighting_overrides_group_same_city
        foreign key (tenant_id, group_id) references device_groups (tenant_id, id) on delete cascade;
alter table lighting_targets
    drop constraint lighting_targets_device_id_fkey,
    add constraint lighting_targets_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id);

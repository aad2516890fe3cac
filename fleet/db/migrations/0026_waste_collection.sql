-- Waste collection: what each bin's fill readings teach (fill profiles, emptyings), a city's
-- set-up for collecting (depots, disposal sites, vehicles, times bins must not be collected),
-- pickup plans solved into routes, and the routes crews drive, stop by stop.

-- One row per city: its collection settings (fleet.collection.models.CollectionSettings).
create table collection_settings (
    tenant_id          uuid primary key references tenants (id),
    -- A bin is due once it will pass this fill (percent) before the next possible collection.
    threshold_percent  double precision not null default 80 check (threshold_percent > 0 and threshold_percent <= 100),
    service_s          integer not null default 90 check (service_s between 0 and 3600),
    -- Unloading at a disposal site, in seconds.
    unload_s           integer not null default 900 check (unload_s between 0 and 14400),
    -- Road distance over great-circle distance, when no routing service is set.
    road_factor        double precision not null default 1.35 check (road_factor >= 1 and road_factor <= 5),
    speed_kmh          double precision not null default 22 check (speed_kmh > 0 and speed_kmh <= 130),
    -- When the scheduler's leader builds tomorrow's plan, in the city's local time; null: never.
    plan_at            time default '18:00',
    time_limit_s       integer not null default 30 check (time_limit_s between 1 and 600),
    -- The fixed round the plan is compared with: every bin emptied every this many days.
    round_days         integer not null default 2 check (round_days between 1 and 14),
    updated_at         timestamptz not null default now()
);

create table collection_depots (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references tenants (id),
    name        text not null check (length(name) between 1 and 200),
    lat         double precision not null check (lat between -90 and 90),
    lon         double precision not null check (lon between -180 and 180),
    created_at  timestamptz not null default now()
);
create unique index collection_depots_tenant_id on collection_depots (tenant_id, id);
create unique index collection_depots_name on collection_depots (tenant_id, name);

create table collection_disposal_sites (
    id           uuid primary key default gen_random_uuid(),
    tenant_id    uuid not null references tenants (id),
    name         text not null check (length(name) between 1 and 200),
    lat          double precision not null check (lat between -90 and 90),
    lon          double precision not null check (lon between -180 and 180),
    -- Waste kinds it takes; empty: every kind.
    waste_kinds  text[] not null default '{}',
    created_at   timestamptz not null default now()
);
create unique index collection_disposal_sites_tenant_id on collection_disposal_sites (tenant_id, id);
create unique index collection_disposal_sites_name on collection_disposal_sites (tenant_id, name);

-- A kind of truck: `count` of them, alike, based at one depot, working one shift a day.
create table collection_vehicles (
    id               uuid primary key default gen_random_uuid(),
    tenant_id        uuid not null references tenants (id),
    name             text not null check (length(name) between 1 and 200),
    waste_kind       text not null,
    capacity_litres  integer not null check (capacity_litres > 0),
    count            integer not null default 1 check (count between 1 and 1000),
    depot_id         uuid not null,
    shift_start      time not null,
    shift_end        time not null,
    cost_per_km      double precision not null default 1 check (cost_per_km >= 0),
    cost_per_hour    double precision not null default 30 check (cost_per_hour >= 0),
    created_at       timestamptz not null default now(),
    constraint collection_vehicles_depot_same_city
        foreign key (tenant_id, depot_id) references collection_depots (tenant_id, id)
);
create unique index collection_vehicles_tenant_id on collection_vehicles (tenant_id, id);
create unique index collection_vehicles_name on collection_vehicles (tenant_id, name);

-- When bins must not be collected (school streets 08:00-09:00), in the city's local time, for the
-- bins of a district, within a radius of a point, or listed; none of the three: every bin.
create table collection_time_windows (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references tenants (id),
    name        text not null default '' check (length(name) <= 200),
    starts      time not null,
    ends        time not null check (ends > starts),
    weekdays    smallint[] not null default '{1,2,3,4,5,6,7}'
                check (weekdays <@ '{1,2,3,4,5,6,7}'::smallint[] and cardinality(weekdays) > 0),
    district    text,
    lat         double precision check (lat between -90 and 90),
    lon         double precision check (lon between -180 and 180),
    radius_m    double precision check (radius_m > 0),
    device_ids  uuid[] not null default '{}',
    created_at  timestamptz not null default now(),
    check ((lat is null) = (lon is null) and (lat is null) = (radius_m is null))
);
create unique index collection_time_windows_tenant_id on collection_time_windows (tenant_id, id);

-- What a bin's fill readings (/3435/0/2) taught so far: a fill rate (percent per hour) for each
-- hour of the week (168, Monday 00:00 local first), how many observations back each, and the
-- noise around them. Kept current by the scheduler's leader, incrementally from `through`.
create table bin_fill_profiles (
    tenant_id        uuid not null references tenants (id),
    device_id        uuid not null,
    rates            double precision[] not null,
    weights          double precision[] not null,
    residual_sd      double precision,
    last_fill        double precision,
    last_fill_at     timestamptz,
    last_emptied_at  timestamptz,
    through          timestamptz,
    updated_at       timestamptz not null default now(),
    primary key (tenant_id, device_id),
    constraint bin_fill_profiles_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id) on delete cascade
);

-- Each time a bin was emptied, and how Fleet knows: its fill dropped, the "emptied" Execute
-- (/3435/0/9), or a crew completed its stop.
create table bin_emptyings (
    id           uuid primary key default gen_random_uuid(),
    tenant_id    uuid not null references tenants (id),
    device_id    uuid not null,
    at           timestamptz not null,
    source       text not null check (source in ('drop', 'execute', 'stop')),
    fill_before  double precision,
    fill_after   double precision,
    stop_id      uuid,
    created_at   timestamptz not null default now(),
    constraint bin_emptyings_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id) on delete cascade
);
create unique index bin_emptyings_tenant_id on bin_emptyings (tenant_id, id);
create unique index bin_emptyings_once on bin_emptyings (tenant_id, device_id, at, source);
create index bin_emptyings_recent on bin_emptyings (tenant_id, device_id, at desc);

-- A pickup plan for a date: the routes solved for it and the bins that could not be fitted.
create table collection_plans (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       uuid not null references tenants (id),
    date            date not null,
    -- null: every waste kind the city's vehicles collect.
    waste_kind      text,
    status          text not null default 'solving'
                    check (status in ('solving', 'ready', 'failed', 'superseded')),
    -- 'api': asked for; 'schedule': the evening's automation; 'replan': mid-shift.
    source          text not null default 'api' check (source in ('api', 'schedule', 'replan')),
    replaces_id     uuid,
    time_limit_s    integer not null,
    error           text,
    cost            double precision,
    distance_m      double precision,
    duration_s      double precision,
    -- Counts and what the plan saves against the fixed round (fleet.collection.models.PlanSummary).
    summary         jsonb not null default '{}',
    created_by      uuid,
    created_at      timestamptz not null default now(),
    solved_at       timestamptz
);
create unique index collection_plans_tenant_id on collection_plans (tenant_id, id);
alter table collection_plans add constraint collection_plans_replaces_same_city
    foreign key (tenant_id, replaces_id) references collection_plans (tenant_id, id);
create index collection_plans_date on collection_plans (tenant_id, date desc, created_at desc);
-- The evening's automation builds one plan per city, date and waste kind, whichever node leads.
create unique index collection_plans_scheduled_once on collection_plans (tenant_id, date, coalesce(waste_kind, ''))
    where source = 'schedule';

-- One truck's route in a plan; crews drive it.
create table collection_routes (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       uuid not null references tenants (id),
    plan_id         uuid not null,
    vehicle_id      uuid not null,
    -- Which of the vehicle row's `count` trucks (0-based).
    vehicle_number  integer not null default 0,
    crew_id         uuid,
    status          text not null default 'planned'
                    check (status in ('planned', 'assigned', 'in_progress', 'completed', 'cancelled')),
    starts_at       timestamptz not null,
    ends_at         timestamptz not null,
    distance_m      double precision not null,
    duration_s      double precision not null,
    -- What the day actually was: km driven (the tablet's positions or the stops done) and bins emptied.
    actual_km       double precision,
    bins_emptied    integer not null default 0,
    started_at      timestamptz,
    finished_at     timestamptz,
    version         integer not null default 1,
    updated_at      timestamptz not null default now(),
    constraint collection_routes_plan_same_city
        foreign key (tenant_id, plan_id) references collection_plans (tenant_id, id) on delete cascade,
    constraint collection_routes_vehicle_same_city
        foreign key (tenant_id, vehicle_id) references collection_vehicles (tenant_id, id),
    constraint collection_routes_crew_same_city
        foreign key (tenant_id, crew_id) references crews (tenant_id, id)
);
create unique index collection_routes_tenant_id on collection_routes (tenant_id, id);
create index collection_routes_plan on collection_routes (tenant_id, plan_id);
create index collection_routes_crew on collection_routes (tenant_id, crew_id, starts_at desc) where crew_id is not null;

-- A route's stops in order: bins to empty and disposal sites to unload at (`seq` from 0).
create table collection_stops (
    id                uuid primary key default gen_random_uuid(),
    tenant_id         uuid not null references tenants (id),
    route_id          uuid not null,
    seq               integer not null check (seq >= 0),
    kind              text not null check (kind in ('bin', 'disposal')),
    device_id         uuid,
    disposal_site_id  uuid,
    lat               double precision not null,
    lon               double precision not null,
    arrival           timestamptz not null,
    -- Litres on the truck after the stop (0 after unloading).
    load_after        integer not null,
    -- Planned fill of the bin at arrival, percent.
    expected_fill     double precision,
    required          boolean not null default true,
    status            text not null default 'planned' check (status in ('planned', 'done', 'skipped')),
    skip_reason       text check (skip_reason in ('blocked', 'not_found', 'damaged')),
    -- 'crew': marked on the tablet; 'fill': the bin's own fill drop completed it.
    done_source       text check (done_source in ('crew', 'fill')),
    done_at           timestamptz,
    done_by           text,
    notes             text check (length(notes) <= 2000),
    work_order_id     uuid,
    updated_at        timestamptz not null default now(),
    check ((kind = 'bin') = (device_id is not null) and (kind = 'disposal') = (disposal_site_id is not null)),
    check ((status = 'skipped') = (skip_reason is not null)),
    constraint collection_stops_route_same_city
        foreign key (tenant_id, route_id) references collection_routes (tenant_id, id) on delete cascade,
    constraint collection_stops_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id),
    constraint collection_stops_site_same_city
        foreign key (tenant_id, disposal_site_id) references collection_disposal_sites (tenant_id, id),
    constraint collection_stops_work_order_same_city
        foreign key (tenant_id, work_order_id) references work_orders (tenant_id, id)
);
create unique index collection_stops_tenant_id on collection_stops (tenant_id, id);
create unique index collection_stops_order on collection_stops (tenant_id, route_id, seq);
create index collection_stops_bin_open on collection_stops (tenant_id, device_id) where status = 'planned';

-- Bins a plan could not fit, and why (fleet.collection.models.UnassignedReason).
create table collection_unassigned (
    tenant_id  uuid not null references tenants (id),
    plan_id    uuid not null,
    device_id  uuid not null,
    reason     text not null,
    detail     text,
    primary key (tenant_id, plan_id, device_id),
    constraint collection_unassigned_plan_same_city
        foreign key (tenant_id, plan_id) references collection_plans (tenant_id, id) on delete cascade,
    constraint collection_unassigned_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id)
);

-- The wall: row-level security enabled and forced (the owner too), then fleet_wall's policies.
alter table collection_settings enable row level security;
alter table collection_settings force row level security;
select fleet_wall('collection_settings');
alter table collection_depots enable row level security;
alter table collection_depots force row level security;
select fleet_wall('collection_depots');
alter table collection_disposal_sites enable row level security;
alter table collection_disposal_sites force row level security;
select fleet_wall('collection_disposal_sites');
alter table collection_vehicles enable row level security;
alter table collection_vehicles force row level security;
select fleet_wall('collection_vehicles');
alter table collection_time_windows enable row level security;
alter table collection_time_windows force row level security;
select fleet_wall('collection_time_windows');
alter table bin_fill_profiles enable row level security;
alter table bin_fill_profiles force row level security;
select fleet_wall('bin_fill_profiles');
alter table bin_emptyings enable row level security;
alter table bin_emptyings force row level security;
select fleet_wall('bin_emptyings');
alter table collection_plans enable row level security;
alter table collection_plans force row level security;
select fleet_wall('collection_plans');
alter table collection_routes enable row level security;
alter table collection_routes force row level security;
select fleet_wall('collection_routes');
alter table collection_stops enable row level security;
alter table collection_stops force row level security;
select fleet_wall('collection_stops');
alter table collection_unassigned enable row level security;
alter table collection_unassigned force row level security;
select fleet_wall('collection_unassigned');

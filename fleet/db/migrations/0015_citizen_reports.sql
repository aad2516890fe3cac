-- Citizens' reports (Open311 GeoReport v2): the service requests and each city's Open311 settings.

-- One row per city that changed a default; a city without a row uses the defaults below.
create table open311_settings (
    tenant_id        uuid primary key references tenants (id),
    -- How far from the reported spot a device of the right kind may stand and still be the one meant.
    match_radius_m   double precision not null default 50 check (match_radius_m > 0 and match_radius_m <= 1000),
    -- Whether anyone may read the city's service requests without a key (they hold no personal data).
    public_requests  boolean not null default true,
    updated_at       timestamptz not null default now()
);

-- A citizen's report. Contact fields are kept for the control room and never rendered.
create table service_requests (
    id                  uuid primary key default gen_random_uuid(),
    seq                 bigint generated always as identity unique,
    tenant_id           uuid not null references tenants (id),
    -- What citizens see and quote: short, random, unique within the city.
    service_request_id  text not null check (service_request_id ~ '^[a-z0-9]{8,32}$'),
    service_code        text not null check (service_code ~ '^[a-z_]+$'),
    description         text not null default '' check (length(description) <= 4000),
    attributes          jsonb not null default '{}',
    lat                 double precision check (lat between -90 and 90),
    lon                 double precision check (lon between -180 and 180),
    address             text check (length(address) <= 1000),
    address_id          text check (length(address_id) <= 200),
    media_url           text check (length(media_url) <= 2000),
    email               text check (length(email) <= 320),
    first_name          text check (length(first_name) <= 200),
    last_name           text check (length(last_name) <= 200),
    phone               text check (length(phone) <= 50),
    -- The citizen's phone or app, as Open311 names it; not one of the city's devices.
    reporter_device_id  text check (length(reporter_device_id) <= 200),
    account_id          text check (length(account_id) <= 200),
    api_key_id          uuid,
    device_id           uuid,
    alarm_id            uuid,
    work_order_id       uuid,
    requested_at        timestamptz not null default now(),
    updated_at          timestamptz not null default now(),
    constraint service_requests_located check ((lat is null) = (lon is null) and (lat is not null or address is not null or address_id is not null)),
    constraint service_requests_key_same_city foreign key (tenant_id, api_key_id) references api_keys (tenant_id, id),
    constraint service_requests_device_same_city foreign key (tenant_id, device_id) references devices (tenant_id, id),
    constraint service_requests_alarm_same_city foreign key (tenant_id, alarm_id) references alarms (tenant_id, id),
    constraint service_requests_work_order_same_city foreign key (tenant_id, work_order_id) references work_orders (tenant_id, id)
);
create unique index service_requests_tenant_id on service_requests (tenant_id, id);
create unique index service_requests_public_id on service_requests (tenant_id, service_request_id);
create index service_requests_requested on service_requests (tenant_id, requested_at, seq);
create index service_requests_work_order on service_requests (tenant_id, work_order_id);

-- The wall: row-level security enabled and forced (the owner too), then fleet_wall's policies
-- (tenant_wall for fleet_app, system_access for fleet_system).
alter table open311_settings enable row level security;
alter table open311_settings force row level security;
select fleet_wall('open311_settings');
alter table service_requests enable row level security;
alter table service_requests force row level security;
select fleet_wall('service_requests');

-- Work orders in the street: the city's rules (alarm → work order, deadlines, reopen window),
-- photos kept in the database so every node serves them, idempotent POSTs, and the links that
-- let a device's own reports prove or reopen a repair.

-- One row per city; a missing row, or a missing field, means the documented defaults
-- (fleet.workorders.models.WorkOrderRules).
create table work_order_rules (
    tenant_id   uuid primary key references tenants (id),
    -- [{"alarm_types": [...], "min_severity": "major", "unacknowledged_minutes": 30,
    --   "work_order_type": "repair_lamp", "priority": "high"}, ...]
    alarm_rules jsonb not null default '[]' check (jsonb_typeof(alarm_rules) = 'array'),
    due_hours   jsonb not null default '{}' check (jsonb_typeof(due_hours) = 'object'),
    reopen_window_days integer not null default 7 check (reopen_window_days between 0 and 365),
    version     integer not null default 1,
    updated_at  timestamptz not null default now()
);

-- An alarm never gets two work orders, however many nodes run the rule at once.
create unique index work_orders_one_per_alarm on work_orders (tenant_id, alarm_id) where alarm_id is not null;
create index work_orders_open_device on work_order_devices (tenant_id, device_id, work_order_id);

-- The device's status before work started, so closing the work order gives it back.
alter table work_order_devices add column status_before text
    check (status_before in ('provisioned', 'online', 'offline', 'maintenance', 'decommissioned'));

-- The alarm that reopened a done work order (its own alarm stays the one it was made for).
alter table work_orders
    add column reopened_by_alarm_id uuid,
    add column reopened_at timestamptz,
    add constraint work_orders_reopen_alarm_same_city
        foreign key (tenant_id, reopened_by_alarm_id) references alarms (tenant_id, id);
create index work_orders_awaiting_proof on work_orders (tenant_id, status, closed_at) where status = 'done';

-- Photos from the street: images only, size-limited by the service, bytes in PostgreSQL.
create table work_order_attachments (
    id             uuid primary key default gen_random_uuid(),
    tenant_id      uuid not null references tenants (id),
    work_order_id  uuid not null,
    media_type     text not null check (media_type in ('image/jpeg', 'image/png', 'image/webp')),
    size_bytes     integer not null check (size_bytes > 0),
    content        bytea not null,
    created_by     text not null,
    created_at     timestamptz not null default now(),
    constraint work_order_attachments_order_same_city
        foreign key (tenant_id, work_order_id) references work_orders (tenant_id, id) on delete cascade
);
create unique index work_order_attachments_tenant_id on work_order_attachments (tenant_id, id);
create index work_order_attachments_order on work_order_attachments (tenant_id, work_order_id, created_at);

-- Idempotency-Key: the first response to a (key, API key) is kept for a day and replayed.
create table idempotency_keys (
    tenant_id     uuid not null references tenants (id),
    api_key_id    uuid not null,
    key           text not null check (length(key) between 1 and 255),
    method        text not null,
    path          text not null,
    body_hash     bytea not null,
    state         text not null default 'in_progress' check (state in ('in_progress', 'done')),
    status        integer,
    headers       jsonb,
    body          bytea,
    created_at    timestamptz not null default now(),
    primary key (tenant_id, api_key_id, key),
    constraint idempotency_keys_api_key_same_city
        foreign key (tenant_id, api_key_id) references api_keys (tenant_id, id) on delete cascade
);
create index idempotency_keys_created on idempotency_keys (created_at);
-- The work-order pass asks, for every due alarm, whether a work order answers it through
-- alarm_id (indexed in 0012) or through reopened_by_alarm_id.
create index work_orders_reopened_by_alarm on work_orders (tenant_id, reopened_by_alarm_id)
    where reopened_by_alarm_id is not null;

-- The wall: row-level security enabled and forced (the owner too), then fleet_wall's policies
-- (tenant_wall for fleet_app, system_access for fleet_system).
alter table work_order_rules enable row level security;
alter table work_order_rules force row level security;
select fleet_wall('work_order_rules');
alter table work_order_attachments enable row level security;
alter table work_order_attachments force row level security;
select fleet_wall('work_order_attachments');
alter table idempotency_keys enable row level security;
alter table idempotency_keys force row level security;
select fleet_wall('idempotency_keys');

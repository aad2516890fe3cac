-- Downlink: commands to devices (read, write, execute, observe), queued in PostgreSQL and shared
-- between Fleet nodes with FOR UPDATE SKIP LOCKED; active observations; live nodes.

create table command_batches (
    id            uuid primary key default gen_random_uuid(),
    tenant_id     uuid not null references tenants (id),
    operation     text not null check (operation in ('read', 'write', 'execute', 'observe', 'cancel_observe')),
    path          text not null,
    value         jsonb,
    target        jsonb not null,
    device_count  integer not null,
    created_by    uuid,
    -- What created it: an API key's request, or the scheduler ('lighting', ...).
    origin        text not null default 'api',
    created_at    timestamptz not null default now(),
    expires_at    timestamptz not null
);
create index command_batches_tenant on command_batches (tenant_id, created_at desc);

create table commands (
    id               uuid primary key default gen_random_uuid(),
    batch_id         uuid not null references command_batches (id),
    tenant_id        uuid not null references tenants (id),
    device_id        uuid not null references devices (id),
    operation        text not null,
    path             text not null,
    value            jsonb,
    status           text not null default 'queued'
                     check (status in ('queued', 'sent', 'succeeded', 'failed', 'expired', 'cancelled')),
    attempts         integer not null default 0,
    next_attempt_at  timestamptz not null default now(),
    expires_at       timestamptz not null,
    result           jsonb,
    error            text,
    created_at       timestamptz not null default now(),
    sent_at          timestamptz,
    completed_at     timestamptz
);
create index commands_due on commands (next_attempt_at) where status = 'queued';
create index commands_device on commands (device_id, status);
create index commands_batch on commands (batch_id, status);
create index commands_sent on commands (sent_at) where status = 'sent';

create table observations (
    device_id   uuid not null references devices (id),
    path        text not null,
    tenant_id   uuid not null references tenants (id),
    node        text,
    active      boolean not null default false,
    requested_at timestamptz not null default now(),
    established_at timestamptz,
    primary key (device_id, path)
);

create table fleet_nodes (
    name         text primary key,
    started_at   timestamptz not null default now(),
    heartbeat_at timestamptz not null default now()
);

alter table command_batches enable row level security;
create policy tenant_wall on command_batches using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());
alter table commands enable row level security;
create policy tenant_wall on commands using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());
alter table observations enable row level security;
create policy tenant_wall on observations using (tenant_id = fleet_current_tenant())
    with check (tenant_id = fleet_current_tenant());

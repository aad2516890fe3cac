-- Firmware over the air: each city's trusted release keys, signed images (bytes in chunked rows,
-- so every node serves them), maintenance windows, campaigns rolled out in waves, and every
-- device's part in one with its timeline.

-- Whether a campaign needs a second admin's approval before it starts.
alter table tenants add column firmware_approval_required boolean not null default false;

-- Ed25519 public keys (PEM) whose signatures the city trusts; revoked, never deleted, since
-- images name the key that verified them.
create table firmware_keys (
    id           uuid primary key default gen_random_uuid(),
    tenant_id    uuid not null references tenants (id),
    name         text not null check (length(name) between 1 and 200),
    public_key   text not null check (length(public_key) <= 4096),
    -- SHA-256 (hex) of the raw 32-byte public key: one live registration per key and city.
    fingerprint  text not null check (fingerprint ~ '^[0-9a-f]{64}$'),
    created_by   uuid,
    created_at   timestamptz not null default now(),
    revoked_at   timestamptz
);
create unique index firmware_keys_tenant_id on firmware_keys (tenant_id, id);
create unique index firmware_keys_live on firmware_keys (tenant_id, fingerprint) where revoked_at is null;

create table firmware_images (
    id             uuid primary key default gen_random_uuid(),
    tenant_id      uuid not null references tenants (id),
    version        text not null check (length(version) between 1 and 100),
    -- Compatible models and manufacturers (/3/0/1, /3/0/0); empty means any.
    models         text[] not null default '{}',
    manufacturers  text[] not null default '{}',
    notes          text not null default '' check (length(notes) <= 20000),
    filename       text check (length(filename) <= 255),
    size           bigint not null check (size > 0),
    sha256         bytea not null check (length(sha256) = 32),
    signature      bytea not null check (length(signature) = 64),
    key_id         uuid not null,
    -- Bytes per row of firmware_image_chunks (a multiple of 1024, so no CoAP block spans two).
    chunk_size     integer not null check (chunk_size > 0 and chunk_size % 1024 = 0),
    created_by     uuid,
    created_at     timestamptz not null default now(),
    constraint firmware_images_key_same_city
        foreign key (tenant_id, key_id) references firmware_keys (tenant_id, id)
);
create unique index firmware_images_tenant_id on firmware_images (tenant_id, id);
create index firmware_images_created on firmware_images (tenant_id, created_at desc);

create table firmware_image_chunks (
    tenant_id  uuid not null references tenants (id),
    image_id   uuid not null,
    seq        integer not null check (seq >= 0),
    data       bytea not null,
    primary key (tenant_id, image_id, seq),
    constraint firmware_image_chunks_image_same_city
        foreign key (tenant_id, image_id) references firmware_images (tenant_id, id) on delete cascade
);
-- Firmware does not compress; stored as is, a block is a cheap substring of its chunk.
alter table firmware_image_chunks alter column data set storage external;

-- When installs may happen, in the city's local time; a window may cross midnight (22:00-04:00).
-- A device's windows are its groups' windows when any of its groups has one, else the city's
-- (group_id null); no window at all means any time.
create table maintenance_windows (
    id          uuid primary key default gen_random_uuid(),
    tenant_id   uuid not null references tenants (id),
    group_id    uuid,
    name        text not null default '' check (length(name) <= 200),
    starts      time not null,
    ends        time not null check (ends <> starts),
    -- ISO weekdays (1 = Monday) on which the window opens.
    weekdays    smallint[] not null default '{1,2,3,4,5,6,7}'
                check (weekdays <@ '{1,2,3,4,5,6,7}'::smallint[] and cardinality(weekdays) > 0),
    created_at  timestamptz not null default now(),
    constraint maintenance_windows_group_same_city
        foreign key (tenant_id, group_id) references device_groups (tenant_id, id) on delete cascade
);
create unique index maintenance_windows_tenant_id on maintenance_windows (tenant_id, id);
create index maintenance_windows_group on maintenance_windows (tenant_id, group_id);

create table firmware_campaigns (
    id              uuid primary key default gen_random_uuid(),
    tenant_id       uuid not null references tenants (id),
    name            text not null default '' check (length(name) <= 200),
    image_id        uuid not null,
    status          text not null default 'draft'
                    check (status in ('draft', 'awaiting_approval', 'scheduled', 'running', 'paused',
                                      'completed', 'aborted')),
    -- Why it is paused, aborted or waiting, in the city's words.
    status_reason   text,
    target          jsonb not null,
    -- fleet.campaigns.models.CampaignSettings, as given (defaults filled in).
    settings        jsonb not null,
    device_count    integer not null default 0,
    wave_count      integer not null default 0,
    current_wave    integer not null default 0,
    -- Successes and failures already seen when it was last resumed: the error threshold
    -- counts from there, so a resumed campaign does not pause again on the same failures.
    baseline_succeeded integer not null default 0,
    baseline_failed    integer not null default 0,
    start_at        timestamptz,
    created_by      uuid,
    created_at      timestamptz not null default now(),
    approved_by     uuid,
    approved_at     timestamptz,
    started_at      timestamptz,
    paused_at       timestamptz,
    finished_at     timestamptz,
    version         integer not null default 1,
    updated_at      timestamptz not null default now(),
    constraint firmware_campaigns_image_same_city
        foreign key (tenant_id, image_id) references firmware_images (tenant_id, id)
);
create unique index firmware_campaigns_tenant_id on firmware_campaigns (tenant_id, id);
create index firmware_campaigns_created on firmware_campaigns (tenant_id, created_at desc);
create index firmware_campaigns_live on firmware_campaigns (status)
    where status in ('scheduled', 'running', 'paused', 'aborted');

-- One device's part in a campaign. `state` follows fleet.campaigns.models.DeviceState.
create table firmware_campaign_devices (
    tenant_id          uuid not null references tenants (id),
    campaign_id        uuid not null,
    device_id          uuid not null,
    wave               integer not null check (wave >= 0),   -- 0 is the canary
    state              text not null default 'pending'
                       check (state in ('pending', 'waiting', 'downloading', 'downloaded', 'installing',
                                        'verifying', 'succeeded', 'failed', 'cancelled', 'skipped')),
    -- fleet.campaigns.models.FailureReason or SkipReason; detail says more, for people.
    reason             text,
    detail             text,
    delivery           text check (delivery in ('pull', 'push')),
    previous_version   text,
    attempt            integer not null default 0,
    -- The device step under way (a command), if any.
    command_id         uuid,
    -- Pull: SHA-256 of the one-time token in the Package URI, and when it stops working.
    token_hash         bytea unique,
    token_expires_at   timestamptz,
    -- Whether the device notifies /5/0/3 and /5/0/5 (false: Fleet reads them instead).
    observing          boolean,
    state_since        timestamptz not null default now(),
    install_sent_at    timestamptz,
    returned_at        timestamptz,   -- registered again on the target version
    next_check_at      timestamptz,
    updated_at         timestamptz not null default now(),
    active             boolean generated always as
                       (state not in ('succeeded', 'failed', 'cancelled', 'skipped')) stored,
    primary key (tenant_id, campaign_id, device_id),
    constraint firmware_campaign_devices_campaign_same_city
        foreign key (tenant_id, campaign_id) references firmware_campaigns (tenant_id, id) on delete cascade,
    constraint firmware_campaign_devices_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id)
);
-- One active campaign per device, however many nodes create campaigns at once.
create unique index firmware_one_campaign_per_device on firmware_campaign_devices (tenant_id, device_id)
    where active;
create index firmware_campaign_devices_state on firmware_campaign_devices (tenant_id, campaign_id, state, wave);
create index firmware_campaign_devices_live on firmware_campaign_devices (campaign_id, state) where active;

-- Every state a device passed through in a campaign, with its time (written by the trigger
-- below, so no transition can forget it).
create table firmware_device_steps (
    id           bigint generated always as identity primary key,
    tenant_id    uuid not null references tenants (id),
    campaign_id  uuid not null,
    device_id    uuid not null,
    at           timestamptz not null default now(),
    state        text not null,
    reason       text,
    detail       text,
    constraint firmware_device_steps_device_same_city
        foreign key (tenant_id, campaign_id, device_id)
        references firmware_campaign_devices (tenant_id, campaign_id, device_id) on delete cascade
);
create index firmware_device_steps_device on firmware_device_steps (tenant_id, campaign_id, device_id, id);

create function fleet_firmware_step() returns trigger
    language plpgsql as $$
begin
    if tg_op = 'INSERT' or new.state is distinct from old.state then
        insert into firmware_device_steps (tenant_id, campaign_id, device_id, at, state, reason, detail)
        values (new.tenant_id, new.campaign_id, new.device_id, now(), new.state, new.reason, new.detail);
    end if;
    return null;
end $$;
create trigger firmware_campaign_devices_steps
    after insert or update of state on firmware_campaign_devices
    for each row execute function fleet_firmware_step();

-- Pushing an image to a device (Block1 writes of /5/0/0) is a command the dispatcher delivers.
alter table command_batches drop constraint command_batches_operation_check;
alter table command_batches add constraint command_batches_operation_check
    check (operation in ('read', 'write', 'execute', 'observe', 'cancel_observe',
                         'write_attributes', 'discover', 'push_firmware'));

-- The wall: row-level security enabled and forced (the owner too), then fleet_wall's policies.
alter table firmware_keys enable row level security;
alter table firmware_keys force row level security;
select fleet_wall('firmware_keys');
alter table firmware_images enable row level security;
alter table firmware_images force row level security;
select fleet_wall('firmware_images');
alter table firmware_image_chunks enable row level security;
alter table firmware_image_chunks force row level security;
select fleet_wall('firmware_image_chunks');
alter table maintenance_windows enable row level security;
alter table maintenance_windows force row level security;
select fleet_wall('maintenance_windows');
alter table firmware_campaigns enable row level security;
alter table firmware_campaigns force row level security;
select fleet_wall('firmware_campaigns');
alter table firmware_campaign_devices enable row level security;
alter table firmware_campaign_devices force row level security;
select fleet_wall('firmware_campaign_devices');
alter table firmware_device_steps enable row level security;
alter table firmware_device_steps force row level security;
select fleet_wall('firmware_device_steps');

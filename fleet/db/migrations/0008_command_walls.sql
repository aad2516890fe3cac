-- A command's batch and device must be of its own city, as for group members (0003): composite
-- keys make the database refuse anything else. Two checks per inserted command instead of the
-- three single-column keys (batch, tenant, device), which a 10,000-light push paid for per row;
-- the city itself is still checked, through the batch.
create unique index command_batches_tenant_id on command_batches (tenant_id, id);
alter table commands
    drop constraint commands_batch_id_fkey,
    drop constraint commands_tenant_id_fkey,
    drop constraint commands_device_id_fkey,
    add constraint commands_batch_same_city
        foreign key (tenant_id, batch_id) references command_batches (tenant_id, id),
    add constraint commands_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id);

-- Foreign keys ignore row-level security, so a membership row could otherwise point at another
-- city's device or group if some code path skipped its tenant check. Composite keys make the
-- database itself refuse that.
create unique index devices_tenant_id on devices (tenant_id, id);
create unique index device_groups_tenant_id on device_groups (tenant_id, id);
alter table device_group_members
    add constraint device_group_members_device_same_city
        foreign key (tenant_id, device_id) references devices (tenant_id, id),
    add constraint device_group_members_group_same_city
        foreign key (tenant_id, group_id) references device_groups (tenant_id, id) on delete cascade;

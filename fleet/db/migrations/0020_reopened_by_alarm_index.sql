-- The work-order pass asks, for every due alarm, whether a work order answers it through
-- alarm_id (indexed in 0012) or through reopened_by_alarm_id (0014): index that one too.
create index work_orders_reopened_by_alarm on work_orders (tenant_id, reopened_by_alarm_id)
    where reopened_by_alarm_id is not null;

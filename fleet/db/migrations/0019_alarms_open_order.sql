-- The alarm list's default page (open alarms, newest first): 0012's alarms_open leads with status
-- and severity, so "active or acknowledged by seq" walked the whole history of cleared alarms
-- backwards, slower every day. Open alarms by seq, whatever the history holds.
create index alarms_open_seq on alarms (tenant_id, seq) where status <> 'cleared';

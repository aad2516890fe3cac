-- 0037's trigger made every node reload its whole credential directory ('*') on any UPDATE that
-- named tenants.security_modes, even one writing the same value (PATCH /api/v1/tenant sends the
-- list it shows). Only a real change of a city's modes changes which credentials authenticate:
-- the trigger fires for those rows alone (its function, 0037's, is unchanged; pg_notify sends
-- one '*' per transaction however many rows change).
drop trigger tenants_security_modes_changed on tenants;
create trigger tenants_security_modes_changed after update of security_modes on tenants
    for each row when (old.security_modes is distinct from new.security_modes)
    execute function fleet_security_modes_notify();

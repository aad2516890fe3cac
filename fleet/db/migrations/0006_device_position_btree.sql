-- Map queries (bbox, near) run under row-level security, where PostgreSQL only uses an index for
-- leakproof operators; point/box containment is not, so the GiST index was never used and every
-- map view read the whole city. Plain latitude/longitude ranges are, with a b-tree.
create index devices_lat_lon on devices (tenant_id, lat, lon);
drop index devices_position;

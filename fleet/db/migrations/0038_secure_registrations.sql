-- Whether a registration came over coaps:// (DTLS). A device's session is keyed by address,
-- port *and* this, so a plain datagram from a DTLS device's address and port (a spoof is one
-- UDP header away) never speaks for it. No table is created: `registrations` keeps its wall.
alter table registrations add column secure boolean not null default false;
drop index registrations_address;
create index registrations_address on registrations (address, port, secure);

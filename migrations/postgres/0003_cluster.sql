-- Cluster mode: the instances (members) with their heartbeats, and per pipeline one leader
-- lease with a fencing epoch. Times are the database's clock (now()), so instances' clocks
-- need not agree. The epoch only ever grows: a lease taken over gets epoch + 1.
create table cluster_members (
    node      text primary key collate "C",
    url       text not null,
    last_seen timestamptz not null default now(),
    -- Set when the instance stopped on SIGTERM (it is not alive, whatever last_seen says).
    left_at   timestamptz
);

create table cluster_leases (
    pipeline   text primary key collate "C",
    holder     text,
    epoch      bigint not null,
    expires_at timestamptz not null,
    -- The holder's applied offset at its last renewal (for GET /v1/cluster), null before any.
    applied    bigint
);

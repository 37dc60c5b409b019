-- Cluster mode runs on PostgreSQL only; the lease table exists here too so that the one
-- checkpoint code (which checks a lease only when it is given one) reads the same schema.
create table cluster_leases (
    pipeline   text primary key,
    holder     text,
    epoch      integer not null,
    expires_at integer not null,
    applied    integer
);

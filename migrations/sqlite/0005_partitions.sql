-- Cluster mode runs on PostgreSQL only; the partition tables exist here too so that the one
-- checkpoint code reads the same schema (see postgres/0006_partitions.sql).
create table cluster_partitions (
    pipeline   text not null,
    partition  integer not null,
    holder     text,
    epoch      integer not null,
    expires_at integer not null,
    applied    integer,
    primary key (pipeline, partition)
);

create table checkpoint_partitions (
    pipeline        text not null,
    checkpoint      integer not null,
    partition       integer not null,
    lsn             integer not null,
    output_position integer not null,
    generation      integer not null,
    keys_written    integer not null,
    keys_deleted    integer not null,
    bytes           integer not null,
    primary key (pipeline, checkpoint, partition)
);

-- Cluster mode, partitions spread over instances: per partition of a pipeline one owner
-- lease with a fencing epoch (as cluster_leases is per pipeline), and per checkpoint what
-- each partition's owner wrote at its barrier. The checkpoint row completes only once every
-- partition has a row here.
create table cluster_partitions (
    pipeline   text collate "C" not null,
    partition  integer not null,
    holder     text,
    epoch      bigint not null,
    expires_at timestamptz not null,
    -- The owner's applied event offset at its last renewal (for GET /v1/cluster).
    applied    bigint,
    primary key (pipeline, partition)
);

create table checkpoint_partitions (
    pipeline        text collate "C" not null,
    checkpoint      bigint not null,
    partition       integer not null,
    -- The stream sequence of the barrier record the owner wrote at.
    lsn             bigint not null,
    -- Output records of the partition up to the barrier (its sink's position).
    output_position bigint not null,
    -- The LSN of the newest restore record the owner had read (0: none): names the
    -- partition's output records since that restore.
    generation      bigint not null,
    keys_written    bigint not null,
    keys_deleted    bigint not null,
    bytes           bigint not null,
    primary key (pipeline, checkpoint, partition)
);

-- State as chunks (store::chunks): per checkpoint and key group, the rows that checkpoint
-- wrote, encoded together with their CRC-32C, instead of a row per key. No foreign key: the
-- chunks go with their pipeline in its delete. At start eddy moves what state_rows still
-- holds into chunks (store::sql, migrate).
create table state_chunks (
    pipeline   text not null,
    checkpoint integer not null,
    key_group  integer not null,
    part       integer not null,
    rows       integer not null,
    data       blob not null,
    primary key (pipeline, checkpoint, key_group, part)
);

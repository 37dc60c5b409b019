-- State as chunks (store::chunks): per checkpoint and key group, the rows that checkpoint
-- wrote, encoded together with their CRC-32C. A row per key made the database do more work
-- than eddy: 24-33 s to write 2.7 M rows (mostly the primary-key index), 2.5 CPU-s to read
-- them. No foreign key, as for state_rows: the chunks go with their pipeline in its delete.
-- The values are large and already compact: stored out of line, uncompressed.
-- At start eddy moves what state_rows still holds into chunks (store::sql, migrate).
create table state_chunks (
    pipeline   text collate "C" not null,
    checkpoint bigint not null,
    key_group  integer not null,
    part       integer not null,
    rows       integer not null,
    data       bytea not null,
    primary key (pipeline, checkpoint, key_group, part)
);

alter table state_chunks alter column data set storage external;

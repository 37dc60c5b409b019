-- Checkpoints: one row each; the state rows, output records and idempotency keys they wrote.
-- State rows are versioned by checkpoint id (append-only): the state at checkpoint C is, per
-- (operator, key), the newest row with checkpoint <= C, a null value meaning "no state".

alter table pipelines add column offset_floor bigint not null default 1;
alter table pipelines add column output_floor bigint not null default 1;
alter table pipelines add column checkpoint_floor bigint not null default 0;
-- Set while a restore discards the WAL after this LSN; cleared once the log is cut.
-- Checkpoints up to here had their superseded state rows collected.
alter table pipelines add column gc_horizon bigint not null default 0;
alter table pipelines add column discard_after_lsn bigint;

create table checkpoints (
    pipeline      text not null references pipelines (name) on delete cascade,
    id            bigint not null,
    status        text not null check (status in ('completed', 'failed', 'in_progress')),
    trigger       text not null check (trigger in ('periodic', 'manual', 'shutdown')),
    started_at    bigint not null,
    completed_at  bigint,
    events        bigint not null default 0,
    late_events   bigint not null default 0,
    watermark     bigint,
    next_offset   bigint not null default 1,
    input_offset  bigint,
    output_offset bigint not null default 0,
    wal_lsn       bigint not null default 0,
    keys_written  bigint not null default 0,
    keys_deleted  bigint not null default 0,
    bytes         bigint not null default 0,
    error         text,
    primary key (pipeline, id)
);

create table state_rows (
    pipeline   text not null references pipelines (name) on delete cascade,
    operator   integer not null,
    key        text collate "C" not null,
    checkpoint bigint not null,
    key_group  integer not null,
    last_time  bigint not null,
    value      bytea,
    primary key (pipeline, operator, key, checkpoint)
);

create table output_records (
    pipeline      text not null references pipelines (name) on delete cascade,
    output_offset bigint not null,
    checkpoint    bigint not null,
    record        text not null,
    primary key (pipeline, output_offset)
);

create table idempotency_keys (
    pipeline     text not null references pipelines (name) on delete cascade,
    key          text not null,
    checkpoint   bigint not null,
    created      bigint not null,
    accepted     bigint not null,
    first_offset bigint not null,
    last_offset  bigint not null,
    primary key (pipeline, key)
);

create index state_rows_by_checkpoint on state_rows (pipeline, checkpoint);

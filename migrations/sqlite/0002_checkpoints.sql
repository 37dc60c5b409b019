-- Checkpoints: one row each; the state rows, output records and idempotency keys they wrote.
-- State rows are versioned by checkpoint id (append-only): the state at checkpoint C is, per
-- (operator, key), the newest row with checkpoint <= C, a null value meaning "no state".

alter table pipelines add column offset_floor integer not null default 1;
alter table pipelines add column output_floor integer not null default 1;
alter table pipelines add column checkpoint_floor integer not null default 0;
-- Checkpoints up to here had their superseded state rows collected.
alter table pipelines add column gc_horizon integer not null default 0;
alter table pipelines add column discard_after_lsn integer;

create table checkpoints (
    pipeline      text not null references pipelines (name) on delete cascade,
    id            integer not null,
    status        text not null check (status in ('completed', 'failed', 'in_progress')),
    trigger       text not null check (trigger in ('periodic', 'manual', 'shutdown')),
    started_at    integer not null,
    completed_at  integer,
    events        integer not null default 0,
    late_events   integer not null default 0,
    watermark     integer,
    next_offset   integer not null default 1,
    input_offset  integer,
    output_offset integer not null default 0,
    wal_lsn       integer not null default 0,
    keys_written  integer not null default 0,
    keys_deleted  integer not null default 0,
    bytes         integer not null default 0,
    error         text,
    primary key (pipeline, id)
);

create table state_rows (
    pipeline   text not null references pipelines (name) on delete cascade,
    operator   integer not null,
    key        text not null,
    checkpoint integer not null,
    key_group  integer not null,
    last_time  integer not null,
    value      blob,
    primary key (pipeline, operator, key, checkpoint)
);

create table output_records (
    pipeline      text not null references pipelines (name) on delete cascade,
    output_offset integer not null,
    checkpoint    integer not null,
    record        text not null,
    primary key (pipeline, output_offset)
);

create table idempotency_keys (
    pipeline     text not null references pipelines (name) on delete cascade,
    key          text not null,
    checkpoint   integer not null,
    created      integer not null,
    accepted     integer not null,
    first_offset integer not null,
    last_offset  integer not null,
    primary key (pipeline, key)
);

create index state_rows_by_checkpoint on state_rows (pipeline, checkpoint);

-- Pipeline definitions: the validated spec document as submitted (defaults filled in).
create table pipelines (
    name       text primary key collate "C",
    spec       jsonb not null,
    created_at timestamptz not null default now()
);

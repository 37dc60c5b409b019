-- Pipeline definitions: the validated spec document as submitted (defaults filled in).
create table pipelines (
    name       text primary key,
    spec       text not null,
    created_at text not null default (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);

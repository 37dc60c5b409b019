-- A foreign key on state_rows cost a checkpoint of 2.7 M rows 26 s (one check per row). The
-- rows go with their pipeline in the same transaction instead (store: delete_pipeline), and a
-- checkpoint of a pipeline deleted meanwhile fails: its checkpoints row is gone.
alter table state_rows drop constraint state_rows_pipeline_fkey;

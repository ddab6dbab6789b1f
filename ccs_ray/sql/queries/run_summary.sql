-- How did each run go, per model? Status (and, for a failed run, the error that stopped it), images scanned,
-- shards done or failed, errors by stage, and the wall time of each stage ("scan 31.2 s, spans 4.1 s, ..., total").
WITH sh AS (
    SELECT run_id, model, count(*) AS shards, count(*) FILTER (WHERE status = 'done') AS shards_done,
           sum(n_images) AS shard_images, sum(seconds) AS shard_seconds
    FROM shards GROUP BY ALL
), er AS (
    SELECT run_id, model, count(*) AS errors, list(DISTINCT stage ORDER BY stage) AS error_stages
    FROM errors GROUP BY ALL
)
SELECT r.run_id, r.model, r.spec_name, r.stage, r.status, r.error, r.started_at, r.finished_at, r.n_images,
       coalesce(sh.shards, 0) AS shards, coalesce(sh.shards_done, 0) AS shards_done, sh.shard_seconds,
       coalesce(er.errors, 0) AS errors, er.error_stages, r.stage_seconds,
       array_to_string(list_transform(map_entries(r.stage_seconds), lambda e: e.key || ' ' || round(e.value, 1) || ' s'),
                       ', ') AS stage_times
FROM runs r
LEFT JOIN sh USING (run_id, model)
LEFT JOIN er USING (run_id, model)
ORDER BY r.started_at, r.model;

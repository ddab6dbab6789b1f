-- How fast did each node scan? Per run, model and node: shards done, images, the node's busy wall time (from its
-- first shard's start, finished_at - seconds, to its last shard's end), images/s over that time, and the node's
-- share of the images. Nodes of one run that differ much in images/s while holding the same actors point at a
-- slow disk, network or CPU.
SELECT run_id, model, node, count(*) AS shards, sum(n_images) AS images,
       round(epoch(max(finished_at)) - min(epoch(finished_at) - seconds), 2) AS busy_s,
       round(sum(n_images) / nullif(epoch(max(finished_at)) - min(epoch(finished_at) - seconds), 0), 2) AS images_per_s,
       round(100.0 * sum(n_images) / nullif(sum(sum(n_images)) OVER (PARTITION BY run_id, model), 0), 1) AS image_share_pct
FROM shards
WHERE status = 'done'
GROUP BY run_id, model, node
ORDER BY run_id, model, node;

-- How many of the paper's figures does each run reproduce? Per run, model, reference model and where the
-- pruned heads came from (paper: the published sets; ccs: our CCS; none: unpruned): figures matched, how
-- many are comparable, the share of those within tolerance, the mean and largest |difference|, and caveats.
SELECT run_id, our_model, model AS reference_model, heads_from, count(*) AS figures,
       count(*) FILTER (comparable) AS comparable,
       count(*) FILTER (comparable AND within_tolerance) AS within_tolerance,
       avg(within_tolerance::INTEGER) FILTER (comparable) AS share_within,
       avg(abs(difference)) FILTER (comparable) AS mean_abs_difference,
       max(abs(difference)) FILTER (comparable) AS max_abs_difference,
       string_agg(DISTINCT caveat, '; ' ORDER BY caveat) AS caveats
FROM vs_paper
WHERE ours IS NOT NULL
GROUP BY run_id, our_model, model, heads_from
ORDER BY our_model, run_id, CASE heads_from WHEN 'none' THEN 0 WHEN 'paper' THEN 1 ELSE 2 END;

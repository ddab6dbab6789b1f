-- How much does each pruning configuration change each metric against the unpruned model, and how sure is that
-- change? Per run, model, dataset, metric and configuration (config as ablation_config names it; ablation_id where
-- it is one evals row): value (mean over seeds), baseline (the 'none' configuration's), difference = value -
-- baseline in the metric's units (percent points for accuracies; < 0: pruning lowers the metric) and its 95%
-- interval low / high. interval_over = 'seeds' where the configuration has several seeds (Student t over the
-- per-seed differences: how much the draw of heads matters), 'images' where it has one and both it and the
-- unpruned model have per-image results (correctness: top1 / top5; Newcombe's paired score interval, 1998 method 10,
-- over the same images: how much the images drawn matter), else NULL and note says why there is no interval.
WITH per_row AS (
    SELECT e.run_id, e.model, e.dataset, e.metric, e.ablation_id, e.config, e.strategy, e.seed, e.value,
           b.baseline, e.value - b.baseline AS difference
    FROM with_ablation('evals') e
    LEFT JOIN baseline_evals() b USING (run_id, model, dataset, metric)
    WHERE NOT is_baseline(e.strategy)
), configs AS (  -- rows that differ only in seed pool; a configuration without seeds is one ablation_id
    SELECT run_id, model, dataset, metric, config, any_value(strategy) AS strategy,
           CASE WHEN count(*) = 1 THEN any_value(ablation_id) END AS ablation_id, count(*) AS n_seeds,
           avg(value) AS value, any_value(baseline) AS baseline, avg(difference) AS difference,
           mean_interval(list(difference)) AS over_seeds
    FROM per_row
    GROUP BY run_id, model, dataset, metric, config, CASE WHEN seed IS NULL THEN ablation_id END
), images AS (
    SELECT c.run_id, c.model, c.dataset, c.metric, c.ablation_id, paired_difference(c.bits, b.bits, c.n) AS over_images
    FROM correctness c
    JOIN correctness b ON b.run_id = c.run_id AND b.model = c.model AND b.dataset = c.dataset
        AND b.metric = c.metric AND is_baseline(b.strategy) AND b.n = c.n
    WHERE NOT is_baseline(c.strategy)
), judged AS (
    SELECT c.*, CASE WHEN c.baseline IS NULL THEN NULL WHEN c.n_seeds > 1 THEN c.over_seeds
                     ELSE {'mean': i.over_images.diff, 'low': i.over_images.low, 'high': i.over_images.high,
                           'n': NULL::INTEGER} END AS chosen,
           i.ablation_id IS NOT NULL AS has_images
    FROM configs c
    LEFT JOIN images i ON c.n_seeds = 1 AND i.run_id = c.run_id AND i.model = c.model AND i.dataset = c.dataset
        AND i.metric = c.metric AND i.ablation_id = c.ablation_id
)
SELECT run_id, model, dataset, metric, config, strategy, ablation_id, n_seeds, value, baseline, difference,
       chosen.low AS low, chosen.high AS high,
       CASE WHEN chosen.low IS NULL THEN NULL WHEN n_seeds > 1 THEN 'seeds' ELSE 'images' END AS interval_over,
       CASE WHEN baseline IS NULL THEN 'no unpruned (none) evaluation of this dataset and metric'
            WHEN chosen.low IS NOT NULL THEN NULL
            WHEN n_seeds > 1 THEN 'the seeds'' values are not finite'
            WHEN has_images THEN 'per-image results unreadable (bits do not hold n images)'
            WHEN metric IN ('top1', 'top5') THEN '1 seed and no per-image results (results of an earlier version)'
            ELSE '1 seed, and per-image results are stored for top1 and top5 only' END AS note
FROM judged
ORDER BY model, run_id, dataset, metric, config, ablation_id;

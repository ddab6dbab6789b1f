-- How much does each pruning strategy lower each metric against the unpruned model, and how does that
-- compare with pruning random heads? mean and sample std over seeds of the per-configuration rows of evals;
-- random_mean / random_std: the random strategy's, from the evals_random view;
-- drop = baseline - mean; drop_vs_random = random mean - mean (> 0: this strategy hurts more than random pruning).
-- low / high: the Wilson 95% interval of mean as a percentage of the n evaluated items (the images' sampling
-- error; the seeds' spread is std); NULL with a note for metrics that are no such percentage. Intervals on the
-- differences: strategy_differences.
WITH per_config AS (
    SELECT run_id, model, dataset, metric, config, strategy, concept, max(n_heads) AS n_heads,
           count(*) AS n_seeds, avg(value) AS mean, stddev_samp(value) AS std, max(n) AS n
    FROM with_ablation('evals')
    GROUP BY ALL
)
SELECT p.run_id, p.model, p.dataset, p.metric, p.config, p.strategy, p.concept, p.n_heads, p.n_seeds,
       p.mean, p.std, b.baseline, b.baseline - p.mean AS drop,
       r.mean AS random_mean, r.std AS random_std, r.mean - p.mean AS drop_vs_random, p.n,
       metric_interval(p.metric, p.mean, p.n).low AS low, metric_interval(p.metric, p.mean, p.n).high AS high,
       metric_interval_note(p.metric, p.n) AS note
FROM per_config p
LEFT JOIN baseline_evals() b USING (run_id, model, dataset, metric)
LEFT JOIN evals_random r USING (run_id, model, dataset, metric)
ORDER BY p.model, p.run_id, p.dataset, p.metric, p.config;

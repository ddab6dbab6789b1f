-- How much does each pruning strategy lower each metric against the unpruned model, and how does that
-- compare with pruning random heads? mean and sample std over the per-seed rows (evals_per_seed);
-- drop = baseline - mean; drop_vs_random = random mean - mean (> 0: this strategy hurts more than random pruning).
WITH per_config AS (
    SELECT run_id, model, dataset, metric, config, strategy, concept, max(n_heads) AS n_heads,
           count(*) AS n_seeds, avg(value) AS mean, stddev_samp(value) AS std
    FROM with_ablation('evals')
    GROUP BY ALL
)
SELECT p.run_id, p.model, p.dataset, p.metric, p.config, p.strategy, p.concept, p.n_heads, p.n_seeds,
       p.mean, p.std, b.baseline, b.baseline - p.mean AS drop,
       r.mean AS random_mean, r.std AS random_std, r.mean - p.mean AS drop_vs_random
FROM per_config p
LEFT JOIN baseline_evals() b USING (run_id, model, dataset, metric)
LEFT JOIN per_config r ON r.run_id = p.run_id AND r.model = p.model AND r.dataset = p.dataset
    AND r.metric = p.metric AND r.config = 'random'
ORDER BY p.model, p.run_id, p.dataset, p.metric, p.config;

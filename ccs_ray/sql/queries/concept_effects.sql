-- Does pruning the heads of one concept (e.g. location) hurt the datasets that need it (e.g. Country-211)
-- more than the others? drop = baseline - value (mean over seeds); excess_drop = drop minus the mean drop
-- of all concepts on the same dataset and metric (> 0: this concept matters more there). low / high: the
-- Wilson 95% interval of value over the n evaluated items (NULL with a note for metrics that are no percentage).
WITH per_concept AS (
    SELECT run_id, model, dataset, metric, concept, max(n_heads) AS n_heads, avg(value) AS value, max(n) AS n
    FROM with_ablation('evals')
    WHERE strategy = 'concept'
    GROUP BY ALL
)
SELECT c.run_id, c.model, c.dataset, c.metric, c.concept, c.n_heads, c.value, b.baseline,
       b.baseline - c.value AS drop,
       (b.baseline - c.value) - avg(b.baseline - c.value) OVER (PARTITION BY c.run_id, c.model, c.dataset, c.metric)
           AS excess_drop,
       metric_interval(c.metric, c.value, c.n).low AS low, metric_interval(c.metric, c.value, c.n).high AS high,
       metric_interval_note(c.metric, c.n) AS note
FROM per_concept c
JOIN baseline_evals() b USING (run_id, model, dataset, metric)
ORDER BY c.model, c.run_id, c.dataset, c.metric, c.concept;

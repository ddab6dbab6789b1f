-- What does pruning each group of heads cost, against the group's CCS? Per run, model and configuration that
-- removes heads (seeds of a strategy pooled, as in accuracy_drop_vs_random): n_heads; heads: those every seed
-- removes; mean_ccs: the mean CCS of the removed heads by the judge that chose them (combined where no judge
-- did); delta_accuracy: top-1 accuracy (mean over the accuracy datasets and seeds), pruned - unpruned, in points;
-- delta_maxskew_sum: MaxSkew@k summed over occupations (mean over bias datasets, attributes and seeds), pruned -
-- unpruned. NULL where the configuration has no such evals or bias rows. 95% intervals on each dataset's
-- difference: strategy_differences.
WITH removed AS (
    SELECT run_id, model, ablation_id, coalesce(judge, 'combined') AS judge, unnest(heads) AS head_label
    FROM ablations WHERE n_heads > 0
), ccs_mean AS (
    SELECT r.run_id, r.model, r.ablation_id, avg(c.ccs) AS mean_ccs
    FROM removed r
    LEFT JOIN ccs c ON c.run_id = r.run_id AND c.model = r.model AND c.judge = r.judge AND c.head_label = r.head_label
    GROUP BY ALL
), acc AS (
    SELECT run_id, model, ablation_id, strategy, avg(value) AS accuracy
    FROM evals WHERE is_accuracy(metric) GROUP BY ALL
), skew AS (
    SELECT run_id, model, ablation_id, strategy, avg(maxskew_sum) AS maxskew_sum FROM bias_totals GROUP BY ALL
), per_ablation AS (
    SELECT a.run_id, a.model, ablation_config(a.strategy, a.k, a.concept) AS config, a.strategy, a.n_heads, a.heads,
           m.mean_ccs, acc.accuracy - acc_base.accuracy AS delta_accuracy,
           skew.maxskew_sum - skew_base.maxskew_sum AS delta_maxskew_sum
    FROM ablations a
    JOIN ccs_mean m USING (run_id, model, ablation_id)
    LEFT JOIN acc USING (run_id, model, ablation_id)
    LEFT JOIN acc acc_base ON acc_base.run_id = a.run_id AND acc_base.model = a.model AND is_baseline(acc_base.strategy)
    LEFT JOIN skew USING (run_id, model, ablation_id)
    LEFT JOIN skew skew_base ON skew_base.run_id = a.run_id AND skew_base.model = a.model
        AND is_baseline(skew_base.strategy)
)
SELECT run_id, model, config, strategy, max(n_heads) AS n_heads, count(*) AS n_seeds,
       list_reduce(list(heads), lambda x, y: list_intersect(x, y)) AS heads, avg(mean_ccs) AS mean_ccs,
       avg(delta_accuracy) AS delta_accuracy, avg(delta_maxskew_sum) AS delta_maxskew_sum
FROM per_ablation
GROUP BY ALL
ORDER BY model, run_id, config;

-- When a strategy prunes heads, how does social bias change against the change in zero-shot accuracy?
-- MaxSkew@k summed over occupations (as in the paper) and averaged, per configuration and seed, from the
-- bias_totals view; both, and accuracy (mean over the accuracy datasets), are averaged over seeds;
-- delta_* = pruned - unpruned. accuracy_low / accuracy_high: its Wilson 95% interval over the evaluated images
-- where one accuracy dataset was evaluated; over several (a mean of accuracies over different images) NULL, and
-- accuracy_note says so (each dataset's interval: accuracy_drop_vs_random; differences: strategy_differences).
WITH acc AS (
    SELECT run_id, model, config, avg(value) AS accuracy, count(DISTINCT dataset) AS n_datasets, max(n) AS n
    FROM with_ablation('evals') WHERE is_accuracy(metric)
    GROUP BY ALL
), skew AS (
    SELECT run_id, model, config, strategy, dataset, attribute, max(n_heads) AS n_heads, count(*) AS n_seeds,
           avg(maxskew_sum) AS maxskew_sum, avg(maxskew_mean) AS maxskew_mean
    FROM with_ablation('bias_totals')
    GROUP BY ALL
)
SELECT s.run_id, s.model, s.config, s.strategy, s.dataset, s.attribute, s.n_heads, s.n_seeds,
       s.maxskew_sum, s.maxskew_mean,
       s.maxskew_sum - sb.maxskew_sum AS delta_maxskew_sum, s.maxskew_mean - sb.maxskew_mean AS delta_maxskew_mean,
       a.accuracy, a.accuracy - ab.accuracy AS delta_accuracy,
       CASE WHEN a.n_datasets = 1 THEN wilson_interval(a.accuracy, a.n).low END AS accuracy_low,
       CASE WHEN a.n_datasets = 1 THEN wilson_interval(a.accuracy, a.n).high END AS accuracy_high,
       CASE WHEN a.n_datasets > 1 THEN 'mean over ' || a.n_datasets || ' datasets: no interval' END AS accuracy_note
FROM skew s
LEFT JOIN skew sb ON sb.run_id = s.run_id AND sb.model = s.model AND sb.dataset = s.dataset
    AND sb.attribute = s.attribute AND is_baseline(sb.strategy)
LEFT JOIN acc a ON a.run_id = s.run_id AND a.model = s.model AND a.config = s.config
LEFT JOIN acc ab ON ab.run_id = s.run_id AND ab.model = s.model AND is_baseline(ab.config)
ORDER BY s.model, s.run_id, s.dataset, s.attribute, s.config;

-- How biased is the model under each pruning strategy? Per run, model, configuration (seeds pooled), bias
-- dataset, attribute and template combination: MaxSkew@k summed over occupations (the paper's figure) and
-- averaged over them, each as the mean and sample std (NULL for one seed) over seeds, from the bias_totals view.
SELECT run_id, model, config, strategy, dataset, attribute, combine, max(n_heads) AS n_heads, count(*) AS n_seeds,
       max(n_occupations) AS n_occupations, avg(maxskew_sum) AS maxskew_sum, stddev_samp(maxskew_sum) AS maxskew_sum_std,
       avg(maxskew_mean) AS maxskew_mean, stddev_samp(maxskew_mean) AS maxskew_mean_std
FROM with_ablation('bias_totals')
GROUP BY ALL
ORDER BY model, run_id, dataset, attribute, combine, config;

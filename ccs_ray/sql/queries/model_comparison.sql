-- Models side by side: how do the models compare in CCS and in what pruning their high and low heads does? One row
-- per run and model whose heads were judged, over the CCS of the combined judge (the majority vote): n_heads
-- analysed; ccs_at_0 .. ccs_at_5, the share (0..1) of those heads with CCS = K, and unscored, the share without a
-- score (the seven add to 1); share_high / share_medium / share_low, the share of heads of each CCS level (high =
-- 5, medium 2..4, low <= 1; an unscored head is in none: its share is unscored), share_high_low .. share_low_high: the 95% percentile
-- bootstrap interval over heads of share_high and share_low (share_interval; NULL under 5 heads); heuristic: the
-- CCS came from the offline heuristic judge. Pruning against the unpruned model (strategy none), for the
-- strategies high and low: delta_top1_high / delta_top1_low = top-1 accuracy, pruned - unpruned, in points, the
-- mean over the classification datasets (n_top1_datasets) of the per-dataset difference; delta_maxskew_high /
-- delta_maxskew_low = MaxSkew@k summed over occupations (bias_totals), pruned - unpruned, the mean over the bias
-- datasets, attributes and template combinations (n_bias_groups). NULL where the strategy was not evaluated (not
-- asked for, or it selected no head).
WITH heads AS (
    SELECT run_id, model, count(*) AS n_heads, count(*) FILTER (WHERE ccs_level(ccs) = 'unscored') AS n_unscored,
           count(*) FILTER (WHERE ccs = 0) AS n0, count(*) FILTER (WHERE ccs = 1) AS n1,
           count(*) FILTER (WHERE ccs = 2) AS n2, count(*) FILTER (WHERE ccs = 3) AS n3,
           count(*) FILTER (WHERE ccs = 4) AS n4, count(*) FILTER (WHERE ccs = 5) AS n5,
           count(*) FILTER (WHERE ccs_level(ccs) = 'high') AS n_high,
           count(*) FILTER (WHERE ccs_level(ccs) = 'medium') AS n_medium,
           count(*) FILTER (WHERE ccs_level(ccs) = 'low') AS n_low,
           share_interval(list(ccs::INTEGER), 5) AS high_interval,
           share_interval(list((ccs <= 1)::INTEGER), 1) AS low_interval,
           bool_or(heuristic) AS heuristic
    FROM ccs WHERE judge = 'combined'
    GROUP BY ALL
), top1 AS (  -- per configuration and dataset: top-1 accuracy (mean over seeds)
    SELECT run_id, model, strategy, dataset, avg(value) AS value
    FROM evals WHERE is_accuracy(metric) AND strategy IN ('none', 'high', 'low')
    GROUP BY ALL
), top1_delta AS (
    SELECT p.run_id, p.model, p.strategy, avg(p.value - b.value) AS delta, count(*) AS n_datasets
    FROM top1 p JOIN top1 b ON b.run_id = p.run_id AND b.model = p.model AND b.dataset = p.dataset
        AND is_baseline(b.strategy)
    WHERE p.strategy IN ('high', 'low')
    GROUP BY ALL
), skew AS (  -- per configuration, bias dataset, attribute and combination: MaxSkew@k summed (mean over seeds)
    SELECT run_id, model, strategy, dataset, attribute, combine, avg(maxskew_sum) AS maxskew_sum
    FROM bias_totals WHERE strategy IN ('none', 'high', 'low')
    GROUP BY ALL
), skew_delta AS (
    SELECT p.run_id, p.model, p.strategy, avg(p.maxskew_sum - b.maxskew_sum) AS delta, count(*) AS n_groups
    FROM skew p JOIN skew b ON b.run_id = p.run_id AND b.model = p.model AND b.dataset = p.dataset
        AND b.attribute = p.attribute AND b.combine IS NOT DISTINCT FROM p.combine AND is_baseline(b.strategy)
    WHERE p.strategy IN ('high', 'low')
    GROUP BY ALL
)
SELECT h.run_id, h.model, 'combined' AS judge, h.n_heads,
       h.n0 / h.n_heads AS ccs_at_0, h.n1 / h.n_heads AS ccs_at_1, h.n2 / h.n_heads AS ccs_at_2,
       h.n3 / h.n_heads AS ccs_at_3, h.n4 / h.n_heads AS ccs_at_4, h.n5 / h.n_heads AS ccs_at_5,
       h.n_unscored / h.n_heads AS unscored,
       h.n_high / h.n_heads AS share_high, h.n_medium / h.n_heads AS share_medium, h.n_low / h.n_heads AS share_low,
       h.high_interval.low AS share_high_low, h.high_interval.high AS share_high_high,
       h.low_interval.low AS share_low_low, h.low_interval.high AS share_low_high,
       h.heuristic,
       ah.delta AS delta_top1_high, al.delta AS delta_top1_low, greatest(ah.n_datasets, al.n_datasets) AS n_top1_datasets,
       sh.delta AS delta_maxskew_high, sl.delta AS delta_maxskew_low, greatest(sh.n_groups, sl.n_groups) AS n_bias_groups
FROM heads h
LEFT JOIN top1_delta ah ON ah.run_id = h.run_id AND ah.model = h.model AND ah.strategy = 'high'
LEFT JOIN top1_delta al ON al.run_id = h.run_id AND al.model = h.model AND al.strategy = 'low'
LEFT JOIN skew_delta sh ON sh.run_id = h.run_id AND sh.model = h.model AND sh.strategy = 'high'
LEFT JOIN skew_delta sl ON sl.run_id = h.run_id AND sl.model = h.model AND sl.strategy = 'low'
ORDER BY h.model, h.run_id;

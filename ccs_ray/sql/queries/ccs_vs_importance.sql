-- Does CCS predict a head's importance? Per run, model, dataset, metric (top1 for classification, R@1 for
-- video), ablation mode and judge, over the heads ablated alone (the single strategy, view head_importance)
-- that have a CCS: n_heads and Spearman's rho between CCS and the accuracy the head costs when removed alone
-- (-change, points), with its 95% bootstrap interval over heads (spearman_interval: low, high). Positive rho:
-- heads with a higher CCS cost more accuracy when removed alone; an interval that includes 0 means these heads
-- do not show it either way.
WITH pairs AS (
    SELECT run_id, model, dataset, metric, mode, judge, count(*) AS n_heads,
           spearman_interval(list(ccs::DOUBLE ORDER BY head_label), list(-change ORDER BY head_label)) AS s
    FROM head_importance
    WHERE ccs IS NOT NULL AND metric IN ('top1', 'R@1')
    GROUP BY ALL
)
SELECT run_id, model, dataset, metric, mode, judge, n_heads, s.rho AS rho, s.low AS low, s.high AS high
FROM pairs
ORDER BY model, run_id, dataset, metric, mode, judge;

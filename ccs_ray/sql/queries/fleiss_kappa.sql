-- How far do all the judges agree at once? Fleiss' kappa per model and variant, and over every variant
-- (variant '(all)', as in the judge stage's summary), over the spans that every judge of the model judged
-- (aligned 1/0), from the judgments view. NULL when every answer was the same (kappa is undefined). kappa_se: its
-- standard error over the spans (delta method, Gwet 2008; kappa +- 1.96 kappa_se is a 95% interval).
WITH j AS (
    SELECT run_id, model, variant, head_label, span_rank, judge, aligned
    FROM judgments WHERE judge <> 'combined'
), raters AS (
    SELECT run_id, model, count(DISTINCT judge) AS n FROM j GROUP BY ALL
), items AS (
    SELECT j.run_id, j.model, j.variant, j.head_label, j.span_rank, r.n,
           count(*) FILTER (WHERE j.aligned = 1) AS n1, count(*) FILTER (WHERE j.aligned = 0) AS n0
    FROM j JOIN raters r USING (run_id, model)
    WHERE r.n >= 2
    GROUP BY ALL
    HAVING count(DISTINCT j.judge) FILTER (WHERE j.aligned IS NOT NULL) = r.n AND n1 + n0 = r.n
), stats AS (
    SELECT run_id, model, CASE WHEN grouping(variant) = 1 THEN '(all)' ELSE variant END AS variant,
           max(n) AS n_judges, count(*) AS n_spans,
           avg((n1 * n1 + n0 * n0 - n) / (n * (n - 1))) AS p_observed, sum(n1) / sum(n) AS p_aligned,
           fleiss_kappa_se(list([n0, n1])) AS kappa_se
    FROM items
    GROUP BY GROUPING SETS ((run_id, model, variant), (run_id, model))
)
SELECT run_id, model, variant, n_judges, n_spans, p_observed,
       p_aligned * p_aligned + (1 - p_aligned) * (1 - p_aligned) AS p_expected,
       kappa(p_observed, p_aligned * p_aligned + (1 - p_aligned) * (1 - p_aligned)) AS kappa, kappa_se
FROM stats
ORDER BY model, run_id, variant = '(all)', variant;

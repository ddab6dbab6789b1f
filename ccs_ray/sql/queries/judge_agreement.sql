-- How far do two judges agree on whether a span fits the head's label? Cohen's kappa per model,
-- variant and judge pair, over the spans both judged (1/0), from the judgments view. kappa_se: its large-sample
-- standard error (Fleiss, Cohen & Everitt 1969; kappa +- 1.96 kappa_se is a 95% interval), NULL where kappa is.
WITH j AS (
    SELECT run_id, model, variant, head_label, span_rank, judge, aligned::DOUBLE AS aligned
    FROM judgments WHERE aligned IS NOT NULL AND judge <> 'combined'
), pairs AS (
    SELECT a.run_id, a.model, a.variant, a.judge AS judge_a, b.judge AS judge_b, a.aligned AS x, b.aligned AS y
    FROM j a JOIN j b ON a.run_id = b.run_id AND a.model = b.model AND a.variant IS NOT DISTINCT FROM b.variant
        AND a.head_label = b.head_label AND a.span_rank = b.span_rank AND a.judge < b.judge
), stats AS (
    SELECT run_id, model, variant, judge_a, judge_b, count(*) AS n_spans,
           avg(CASE WHEN x = y THEN 1 ELSE 0 END) AS p_observed, avg(x) AS p_a, avg(y) AS p_b,
           cohen_kappa_se(list(x), list(y)) AS kappa_se
    FROM pairs GROUP BY ALL
)
SELECT run_id, model, variant, judge_a, judge_b, n_spans, p_observed,
       p_a * p_b + (1 - p_a) * (1 - p_b) AS p_expected,
       kappa(p_observed, p_a * p_b + (1 - p_a) * (1 - p_b)) AS kappa, kappa_se
FROM stats
ORDER BY model, run_id, variant, judge_a, judge_b;

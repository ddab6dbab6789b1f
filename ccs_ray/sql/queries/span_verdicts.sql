-- How did each judge judge each of a head's spans? One row per run, model, head, span and judge (combined: the
-- majority vote): the spans CCS counts (the judged method's, judged_spans; ranks 1..m, the judgments of variant
-- 'paper'; every span of subset 'all' where no judge ran, with judge NULL), the span's text, its share of the
-- head's variance (variance_explained), aligned 1/0 (NULL: no valid answer, see error).
WITH judged AS (
    SELECT run_id, model, layer, head, max(span_rank) AS m FROM judgments WHERE variant = 'paper' GROUP BY ALL
)
SELECT s.run_id, s.model, s.layer, s.head, s.head_label, s.rank AS span_rank, s.text, s.variance_explained,
       j.judge, j.aligned, j.error
FROM judged_spans s
LEFT JOIN judged USING (run_id, model, layer, head)
LEFT JOIN judgments j ON j.run_id = s.run_id AND j.model = s.model AND j.layer = s.layer AND j.head = s.head
    AND j.variant = 'paper' AND j.span_rank = s.rank
WHERE s.subset = 'all' AND s.rank <= coalesce(judged.m, s.rank)
ORDER BY s.model, s.run_id, s.layer, s.head, s.rank, j.judge;

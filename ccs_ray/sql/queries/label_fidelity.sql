-- Does each head's label describe what the head outputs, without asking an LLM? Per run, model, head and judge:
-- the label and its CCS, label_variance (share 0..1 of the head's variance along the label's direction in the
-- head's span) and label_percentile (percent of pool texts whose share is <= the label's; 100: no pool text
-- explains more), next to the share TextSpan's first text took (first_span_variance_explained; the judged
-- method's spans, judged_spans: data where the run has them, else weights). NULL label_variance: no label, or a
-- results root written before label fidelity existed (re-run the judge stage).
WITH first_span AS (
    SELECT run_id, model, layer, head, text, variance_explained, coalesce(method, 'data') AS method
    FROM judged_spans WHERE subset = 'all' AND rank = 1
)
SELECT c.run_id, c.model, c.layer, c.head, c.head_label, c.judge, c.label, c.ccs, c.level,
       c.label_variance, c.label_percentile, f.text AS first_span, f.variance_explained AS first_span_variance_explained,
       f.method AS span_method
FROM ccs c LEFT JOIN first_span f USING (run_id, model, layer, head)
ORDER BY c.model, c.run_id, c.layer, c.head, c.judge;

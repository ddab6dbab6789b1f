-- What does each head do? Per model, judge and head: CCS, level (unscored: no CCS; unscored_reason says why, from the
-- judge's errors, unscored_reasons()), the judge's label and the head's
-- top TextSpan texts (the judged method's, judged_spans; subset 'all', in rank order) — the data behind the
-- report's heatmap. label_variance / label_percentile: the label's fidelity (ccs table, ccs_ray.fidelity). heuristic: the scores come from the offline heuristic judge (keyword matching), not from an LLM.
WITH top AS (
    SELECT run_id, model, layer, head, list(text ORDER BY rank) AS spans
    FROM judged_spans WHERE subset = 'all'
    GROUP BY ALL
)
SELECT c.run_id, c.model, c.judge, c.layer, c.head, c.head_label, c.ccs, ccs_level(c.ccs) AS level,
       CASE WHEN c.ccs IS NULL THEN coalesce(u.reasons, 'no judgment recorded') END AS unscored_reason, c.label,
       c.ccs_heldout, c.label_variance, c.label_percentile, coalesce(c.heuristic, false) AS heuristic, coalesce(t.spans, []) AS spans
FROM ccs c LEFT JOIN top t USING (run_id, model, layer, head)
LEFT JOIN unscored_reasons() u USING (run_id, model, judge, head_label)
ORDER BY c.model, c.run_id, c.judge, c.layer, c.head;

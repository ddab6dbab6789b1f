-- Which pruning strategies selected no head, and why? The ablations rows with a reason (e.g. "no head with
-- CCS = 5"); they were recorded, not evaluated.
SELECT run_id, model, ablation_id, strategy, concept, judge, reason
FROM ablations
WHERE reason IS NOT NULL
ORDER BY model, run_id, ablation_id;

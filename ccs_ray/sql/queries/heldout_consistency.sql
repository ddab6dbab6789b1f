-- Does a head's label generalise beyond its top spans? Per model and judge: CCS on spans 1..5 against
-- CCS on the held-out spans 6..10 judged against the same label (correlation, mean difference).
SELECT run_id, model, judge, count(*) AS n_heads, avg(ccs) AS mean_ccs, avg(ccs_heldout) AS mean_ccs_heldout,
       avg(ccs - ccs_heldout) AS mean_difference, corr(ccs, ccs_heldout) AS correlation
FROM ccs
WHERE ccs IS NOT NULL AND ccs_heldout IS NOT NULL
GROUP BY ALL
ORDER BY model, run_id, judge;

-- Which heads have high (CCS = 5), medium (2..4) and low (<= 1) CCS, and which are unscored (no CCS: a judgment
-- missing), per model and judge, with their labels?
SELECT run_id, model, judge, level, count(*) AS n_heads,
       list(head_label ORDER BY layer, head) AS heads,
       list(label ORDER BY layer, head) AS labels
FROM (SELECT * REPLACE (ccs_level(ccs) AS level) FROM ccs)
GROUP BY run_id, model, judge, level
ORDER BY model, run_id, judge, CASE level WHEN 'high' THEN 0 WHEN 'medium' THEN 1 WHEN 'low' THEN 2 ELSE 3 END;

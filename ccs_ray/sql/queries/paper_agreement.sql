-- Do our CCS head sets agree with the ones the paper published? Per run, model, judge and set (high, low,
-- concept:<name>): our and the published heads' counts, Jaccard, precision and recall, our CCS of each
-- published head, and Spearman's rho between our CCS and the published membership (view paper_agreement).
SELECT * FROM paper_agreement
ORDER BY model, run_id, judge, CASE head_set WHEN 'high' THEN 0 WHEN 'low' THEN 1 ELSE 2 END, head_set;

-- CCS@K: what fraction of each model's heads has CCS = K (K = 0..5), per judge?
WITH heads AS (
    SELECT run_id, model, judge, count(ccs) AS n_heads FROM ccs GROUP BY ALL
), ks AS (
    SELECT unnest(range(0, 6))::INTEGER AS k
)
SELECT h.run_id, h.model, h.judge, ks.k, count(c.ccs) AS n_at_k, h.n_heads,
       count(c.ccs) / h.n_heads AS ccs_at_k
FROM heads h CROSS JOIN ks
LEFT JOIN ccs c ON c.run_id = h.run_id AND c.model = h.model AND c.judge = h.judge AND c.ccs = ks.k
WHERE h.n_heads > 0
GROUP BY h.run_id, h.model, h.judge, ks.k, h.n_heads
ORDER BY h.model, h.run_id, h.judge, ks.k;

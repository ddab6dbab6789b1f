-- CCS@K: what fraction of each model's heads has CCS = K (K = 0..5), per judge? The denominator is every
-- analysed head (the paper's H); unscored = the fraction of heads without a score (a judgment missing), so
-- that the six ccs_at_k values plus unscored add to 1.
WITH heads AS (
    SELECT run_id, model, judge, count(*) AS n_heads, count(*) - count(ccs) AS n_unscored FROM ccs GROUP BY ALL
), ks AS (
    SELECT unnest(range(0, 6))::INTEGER AS k
)
SELECT h.run_id, h.model, h.judge, ks.k, count(c.ccs) AS n_at_k, h.n_heads,
       count(c.ccs) / h.n_heads AS ccs_at_k, h.n_unscored, h.n_unscored / h.n_heads AS unscored
FROM heads h CROSS JOIN ks
LEFT JOIN ccs c ON c.run_id = h.run_id AND c.model = h.model AND c.judge = h.judge AND c.ccs = ks.k
GROUP BY h.run_id, h.model, h.judge, ks.k, h.n_heads, h.n_unscored
ORDER BY h.model, h.run_id, h.judge, ks.k;

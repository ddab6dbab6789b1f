-- CCS@K: what fraction of each model's heads has CCS = K (K = 0..5), per judge? The denominator is every
-- analysed head (the paper's H); unscored = the fraction of heads without a score (a judgment missing), so
-- that the six ccs_at_k values plus unscored add to 1. low / high: 95% percentile bootstrap interval of ccs_at_k
-- over the heads (share_interval: fixed seed); note says why there is none (too few heads), or why it is a
-- single point (no head, or every head, has CCS = K: every resample has the same share).
WITH heads AS (
    SELECT run_id, model, judge, count(*) AS n_heads, count(*) - count(ccs) AS n_unscored,
           list(ccs::INTEGER) AS scores
    FROM ccs GROUP BY ALL
), ks AS (
    SELECT unnest(range(0, 6))::INTEGER AS k
), at_k AS (
    SELECT h.run_id, h.model, h.judge, ks.k, count(c.ccs) AS n_at_k, h.n_heads,
           count(c.ccs) / h.n_heads AS ccs_at_k, h.n_unscored, h.n_unscored / h.n_heads AS unscored,
           share_interval(h.scores, ks.k) AS bootstrap
    FROM heads h CROSS JOIN ks
    LEFT JOIN ccs c ON c.run_id = h.run_id AND c.model = h.model AND c.judge = h.judge AND c.ccs = ks.k
    GROUP BY h.run_id, h.model, h.judge, ks.k, h.n_heads, h.n_unscored, h.scores
)
SELECT run_id, model, judge, k, n_at_k, n_heads, ccs_at_k, n_unscored, unscored, bootstrap.low AS low,
       bootstrap.high AS high,
       CASE WHEN bootstrap.low IS NULL THEN 'too few heads (' || n_heads || ') for a bootstrap interval'
            WHEN n_at_k IN (0, n_heads) THEN 'every resample has the same share: the interval is a point' END AS note
FROM at_k
ORDER BY model, run_id, judge, k;

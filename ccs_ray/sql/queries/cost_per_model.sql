-- What did judging each model cost? Calls, cache hits, failures, retries, tokens, USD and latency per
-- model and judge, plus a judge = '(all)' total per model.
SELECT run_id, model, coalesce(judge, '(all)') AS judge, count(*) AS calls,
       count(*) FILTER (WHERE cached) AS cached, count(*) FILTER (WHERE error IS NOT NULL) AS failed,
       coalesce(sum(retries), 0) AS retries, coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       coalesce(sum(completion_tokens), 0) AS completion_tokens, coalesce(sum(cost_usd), 0) AS cost_usd,
       avg(latency_s) FILTER (WHERE NOT cached) AS mean_latency_s,
       quantile_cont(latency_s, 0.95) FILTER (WHERE NOT cached) AS p95_latency_s
FROM judge_calls
GROUP BY GROUPING SETS ((run_id, model, judge), (run_id, model))
ORDER BY model, run_id, judge = '(all)', judge;

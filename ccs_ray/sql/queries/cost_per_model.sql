-- What did judging each model cost? Requests, calls sent, cache hits, merged requests, failures, retries,
-- tokens, USD and latency per model and judge, plus a judge = '(all)' total per model.
-- judge_calls holds every call sent in every lifetime of a run (a killed driver's too), so the sums are exact for
-- every call whose outcome was recorded. outcome_unknown counts calls whose process died while they were in
-- flight (outcome = 'unknown', null tokens and cost): the endpoint may have received and billed them.
SELECT run_id, model, coalesce(judge, '(all)') AS judge, count(*) FILTER (WHERE final) AS requests,
       count(*) FILTER (WHERE via = 'sent') AS calls, count(*) FILTER (WHERE via = 'hit') AS cached,
       count(*) FILTER (WHERE via = 'merged') AS merged,
       count(*) FILTER (WHERE final AND error IS NOT NULL) AS failed,
       count(*) FILTER (WHERE attempt > 0) AS retries,
       count(*) FILTER (WHERE retried_after_timeout) AS retried_after_timeout,
       count(*) FILTER (WHERE outcome = 'unknown') AS outcome_unknown,
       coalesce(sum(prompt_tokens), 0) AS prompt_tokens,
       coalesce(sum(completion_tokens), 0) AS completion_tokens, coalesce(sum(cost_usd), 0) AS cost_usd,
       avg(latency_s) FILTER (WHERE via = 'sent') AS mean_latency_s,
       quantile_cont(latency_s, 0.95) FILTER (WHERE via = 'sent') AS p95_latency_s
FROM judge_calls
GROUP BY GROUPING SETS ((run_id, model, judge), (run_id, model))
ORDER BY model, run_id, judge = '(all)', judge;

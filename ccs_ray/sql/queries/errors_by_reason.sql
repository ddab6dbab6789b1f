-- Which bad inputs and failures did the runs meet? Count per model, stage and reason, with an example item.
SELECT run_id, model, stage, reason, count(*) AS n, min(item) AS example_item
FROM errors
GROUP BY ALL
ORDER BY n DESC, model, stage, reason;

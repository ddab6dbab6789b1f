-- How do our figures compare with the paper's published ones? Every published figure (accuracy, video R@1,
-- MaxSkew summed over occupations) beside ours, per matching run and configuration group (view vs_paper:
-- difference, tolerance, within_tolerance, comparable, caveat); ours is NULL where no run matches.
SELECT * FROM vs_paper
ORDER BY model, dataset, metric, strategy, run_id, our_model, heads_from;

-- Macros shared by the canned queries (sql/queries/*.sql) and handy at the `ccs-ray sql` prompt.
-- Loaded after views.sql.

-- CCS level of a head (docs/architecture.md, "CCS and its levels"): high = 5, low <= 1, medium in between.
CREATE MACRO ccs_level(ccs) AS CASE WHEN ccs >= 5 THEN 'high' WHEN ccs <= 1 THEN 'low' ELSE 'medium' END;

-- The unpruned model's rows in evals / bias (ccs_ray.ablate names the baseline configuration 'none').
CREATE MACRO is_baseline(strategy) AS strategy = 'none';

-- Metrics that are a zero-shot top-1 accuracy (percent; ccs_ray.evals.zeroshot.accuracy_metrics).
CREATE MACRO is_accuracy(metric) AS metric = 'top1';

-- Cohen's or Fleiss' kappa from the observed and the chance agreement; NULL when chance agreement is 1
-- (every rater always gave the same answer: kappa is undefined).
CREATE MACRO kappa(p_observed, p_expected) AS
    CASE WHEN p_expected < 1 THEN (p_observed - p_expected) / (1 - p_expected) END;

-- |a intersect b| / |a union b| of two lists of texts.
CREATE MACRO jaccard(a, b) AS
    len(list_intersect(list_distinct(a), list_distinct(b))) / len(list_distinct(list_concat(a, b)));

-- A readable name for an ablation configuration; rows that differ only in seed share it.
CREATE MACRO ablation_config(strategy, k, concept) AS
    strategy || coalesce(':' || concept, '') || CASE WHEN strategy = 'sweep' THEN ':k=' || k ELSE '' END;

-- The summary rows the prune stage adds for direct reading (ccs_ray/stages/prune.py): the random
-- strategy's mean and std over seeds, and the totals over occupations. No statistic starts from them.
CREATE MACRO is_random_summary(ablation_id) AS ablation_id IN ('random:mean', 'random:std');
CREATE MACRO is_occupation_total(occupation) AS occupation IN ('__sum__', '__mean__');

-- evals and bias without those summary rows: one row per ablation (per seed), dataset, metric / occupation.
CREATE VIEW evals_per_seed AS SELECT * FROM evals WHERE NOT is_random_summary(ablation_id);
CREATE VIEW bias_per_seed AS
    SELECT * FROM bias WHERE NOT is_random_summary(ablation_id) AND NOT is_occupation_total(occupation);

-- Per-seed rows of evals or bias ('evals' / 'bias': read from evals_per_seed / bias_per_seed) with their
-- ablation's config, concept, k and head count.
CREATE MACRO with_ablation(tbl) AS TABLE
    SELECT t.*, ablation_config(t.strategy, a.k, a.concept) AS config, a.concept, a.k, a.n_heads
    FROM query_table(tbl || '_per_seed') t LEFT JOIN ablations a USING (run_id, model, ablation_id);

-- Unpruned metric value per run, model, dataset and metric.
CREATE MACRO baseline_evals() AS TABLE
    SELECT run_id, model, dataset, metric, avg(value) AS baseline
    FROM evals_per_seed WHERE is_baseline(strategy) GROUP BY ALL;

-- CCS rows of one judge ('combined' is the majority vote).
CREATE MACRO ccs_of(judge_name) AS TABLE SELECT * FROM ccs WHERE judge = judge_name;

-- Macros and derived views (summaries of evals / bias) shared by the canned queries (sql/queries/*.sql)
-- and handy at the `ccs-ray sql` prompt. Loaded after views.sql.

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

-- Rows of evals, bias or a view over them with run_id, model and ablation_id (tbl: its name, e.g. 'evals',
-- 'bias', 'bias_totals'), with their ablation's config, concept, k and head count (from ablations).
CREATE MACRO with_ablation(tbl) AS TABLE
    SELECT t.*, ablation_config(t.strategy, a.k, a.concept) AS config, a.concept, a.k, a.n_heads
    FROM query_table(tbl) t LEFT JOIN ablations a USING (run_id, model, ablation_id);

-- The evals and bias tables hold one row per configuration (each random seed its own ablation_id,
-- random:s<seed>) and, in bias, per occupation; the summaries below are computed from those rows.

-- evals_random: the random strategy summarised over its seeds, per run, model, dataset and metric:
-- n_seeds, mean and sample std (stddev_samp, ddof = 1: NULL for one seed) of value over the evals rows
-- with strategy 'random'.
CREATE VIEW evals_random AS
    SELECT run_id, model, dataset, metric, count(*) AS n_seeds, avg(value) AS mean, stddev_samp(value) AS std
    FROM evals WHERE strategy = 'random'
    GROUP BY run_id, model, dataset, metric;

-- bias_random: the same over the random seeds' MaxSkew@k, per run, model, dataset, attribute and
-- occupation: n_seeds, mean and sample std of maxskew over the bias rows with strategy 'random'.
CREATE VIEW bias_random AS
    SELECT run_id, model, dataset, attribute, occupation, combine, count(*) AS n_seeds, avg(maxskew) AS mean,
           stddev_samp(maxskew) AS std
    FROM bias WHERE strategy = 'random'
    GROUP BY run_id, model, dataset, attribute, occupation, combine;

-- bias_totals: MaxSkew@k over occupations, per run, model, configuration (ablation_id, strategy, seed),
-- dataset, attribute and template combination (combine), from the per-occupation bias rows:
-- maxskew_sum = the sum over occupations (the paper's figure, over its 104 occupations), maxskew_mean =
-- their mean, n_occupations = how many were summed (compare sums only at equal n_occupations).
CREATE VIEW bias_totals AS
    SELECT run_id, model, ablation_id, strategy, seed, dataset, attribute, combine, sum(maxskew) AS maxskew_sum,
           avg(maxskew) AS maxskew_mean, count(*) AS n_occupations
    FROM bias
    GROUP BY run_id, model, ablation_id, strategy, seed, dataset, attribute, combine;

-- Unpruned metric value per run, model, dataset and metric.
CREATE MACRO baseline_evals() AS TABLE
    SELECT run_id, model, dataset, metric, avg(value) AS baseline
    FROM evals WHERE is_baseline(strategy) GROUP BY ALL;

-- CCS rows of one judge ('combined' is the majority vote).
CREATE MACRO ccs_of(judge_name) AS TABLE SELECT * FROM ccs WHERE judge = judge_name;

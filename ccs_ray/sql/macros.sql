-- Macros and derived views (summaries of evals / bias) shared by the canned queries (sql/queries/*.sql)
-- and handy at the `ccs-ray sql` prompt. Loaded after views.sql.
--
-- Interval functions (Python, ccs_ray/stats.py; registered by ccs_ray.analytics.connect, so they exist in
-- `ccs-ray sql` connections and the report, not in a plain duckdb shell). 95% intervals; NULL in gives NULL
-- out, and input too small for an interval gives NULL fields:
--   wilson_interval(p DOUBLE /*percent*/, n BIGINT) -> STRUCT(low, high)       Wilson score, percent; k = round(p n / 100)
--   mean_interval(values DOUBLE[]) -> STRUCT(mean, low, high, n)               Student t; NULL low/high for n < 2
--   paired_difference(bits_a BLOB, bits_b BLOB, n BIGINT) -> STRUCT(diff, low, high)
--       a - b in percent points over the same n items (correctness.bits), Newcombe's paired hybrid score interval
--       (Newcombe 1998, method 10, with its corrected phi; ccs_ray.stats.paired_table_difference)
--   spearman_interval(x DOUBLE[], y DOUBLE[]) -> STRUCT(rho, low, high, n)     percentile bootstrap over pairs
--   share_interval(values INTEGER[], k INTEGER) -> STRUCT(share, low, high)    share = k; bootstrap over items
--   cohen_kappa_se(a DOUBLE[], b DOUBLE[]) -> DOUBLE                           Fleiss, Cohen & Everitt (1969)
--   fleiss_kappa_se(counts BIGINT[][]) -> DOUBLE                               per item the raters per category
-- Bootstraps use 2000 resamples and a fixed seed (the same data give the same interval), none under 5 items.

-- CCS level of a head (docs/architecture.md, "CCS and its levels"): high = 5, low <= 1, medium in between;
-- unscored for NULL (a judgment missing), never one of the other three.
CREATE MACRO ccs_level(ccs) AS
    CASE WHEN ccs IS NULL THEN 'unscored' WHEN ccs >= 5 THEN 'high' WHEN ccs <= 1 THEN 'low' ELSE 'medium' END;

-- Why heads have no CCS: per run, model, judge and head_label with a judgment or label error (variant 'paper'),
-- reasons = '<error> (<judges that met it>)' per distinct error, in order; the combined judge (the majority vote)
-- lists every judge's errors (its own, 'no valid vote', only says that they failed).
CREATE MACRO unscored_reasons() AS TABLE
    WITH errs AS (
        SELECT run_id, model, judge, head_label, error
        FROM judgments WHERE variant = 'paper' AND error IS NOT NULL AND judge <> 'combined'
        UNION ALL
        SELECT run_id, model, judge, head_label, error FROM labels WHERE variant = 'paper' AND error IS NOT NULL
    ), mine AS (
        SELECT judge AS of_judge, * FROM errs
        UNION ALL
        SELECT 'combined', * FROM errs
    ), grouped AS (
        SELECT run_id, model, of_judge, head_label, error, string_agg(DISTINCT judge, ', ' ORDER BY judge) AS judges
        FROM mine GROUP BY ALL
    )
    SELECT run_id, model, of_judge AS judge, head_label,
           string_agg(error || ' (' || judges || ')', '; ' ORDER BY error) AS reasons
    FROM grouped GROUP BY ALL;

-- The unpruned model's rows in evals / bias (ccs_ray.ablate names the baseline configuration 'none').
CREATE MACRO is_baseline(strategy) AS strategy = 'none';

-- Metrics that are a zero-shot top-1 accuracy (percent; ccs_ray.evals.zeroshot.accuracy_metrics).
CREATE MACRO is_accuracy(metric) AS metric = 'top1';

-- Metrics that are a percentage of the evals row's n items (top1, top5, video recall R@k), so that a Wilson
-- interval applies; acc:<class> is a percentage of the class's images, whose count evals does not hold.
CREATE MACRO is_proportion(metric) AS metric IN ('top1', 'top5') OR metric LIKE 'R@%';

-- Wilson 95% interval (percent) of a metric value over n items; NULL for metrics that are no such percentage.
CREATE MACRO metric_interval(metric, value, n) AS CASE WHEN is_proportion(metric) THEN wilson_interval(value, n) END;

-- Why a metric value has no Wilson interval (NULL where it has one).
CREATE MACRO metric_interval_note(metric, n) AS CASE
    WHEN metric LIKE 'acc:%' THEN 'per-class accuracy: evals.n counts the dataset''s images, not the class''s'
    WHEN NOT is_proportion(metric) THEN metric || ' is not a percentage of the items'
    WHEN coalesce(n, 0) < 1 THEN 'no item count (n)' END;

-- Cohen's or Fleiss' kappa from the observed and the chance agreement; NULL when chance agreement is 1
-- (every rater always gave the same answer: kappa is undefined).
CREATE MACRO kappa(p_observed, p_expected) AS
    CASE WHEN p_expected < 1 THEN (p_observed - p_expected) / (1 - p_expected) END;

-- |a intersect b| / |a union b| of two lists of texts.
CREATE MACRO jaccard(a, b) AS
    len(list_intersect(list_distinct(a), list_distinct(b))) / len(list_distinct(list_concat(a, b)));

-- A readable name for an ablation configuration; rows that differ only in seed share it (sweep series:
-- sweep:k=2, sweep-low:k=2, sweep-random:k=2).
CREATE MACRO ablation_config(strategy, k, concept) AS
    strategy || coalesce(':' || concept, '') || CASE WHEN strategy LIKE 'sweep%' THEN ':k=' || k ELSE '' END;

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

-- judged_spans: the spans rows the judge labels, per run and model: its data spans (method 'data'; NULL in files
-- of earlier versions) where it has any, else its weights spans (spans.method = 'weights'). A run with
-- spans.method = 'both' has both in spans; this view keeps one set, so joins on (head, rank) never double rows.
CREATE VIEW judged_spans AS
    SELECT * FROM spans
    QUALIFY coalesce(method, 'data') = CASE WHEN bool_or(coalesce(method, 'data') = 'data')
                                                 OVER (PARTITION BY run_id, model) THEN 'data' ELSE 'weights' END;

-- CCS rows of one judge ('combined' is the majority vote).
CREATE MACRO ccs_of(judge_name) AS TABLE SELECT * FROM ccs WHERE judge = judge_name;

-- Against the paper (ccs_ray.reference: the published head sets and figures, views paper_heads,
-- paper_counts, paper_results).

-- How far one of our figures may lie from the published one and still match it, in the metric's points:
-- 1 for a value printed in a table, 2 for one read from a small chart (paper_results.approx).
CREATE MACRO paper_tolerance(approx) AS CASE WHEN approx THEN 2.0 ELSE 1.0 END;

-- The paper model each run's model is compared with: ablations.reference_model (prune.reference_model, default
-- the model's key) where the prune stage ran, else the model's own key; per run and model of ccs or ablations.
CREATE MACRO reference_models() AS TABLE
    SELECT m.run_id, m.model, coalesce(a.reference_model, m.model) AS reference_model
    FROM (SELECT run_id, model FROM ccs UNION SELECT run_id, model FROM ablations) m
    LEFT JOIN (SELECT run_id, model, max(reference_model) AS reference_model FROM ablations GROUP BY ALL) a
        USING (run_id, model);

-- Whether a judge's CCS came from the offline heuristic judge, per run, model and judge.
CREATE MACRO heuristic_judges() AS TABLE
    SELECT run_id, model, judge, bool_or(heuristic) AS heuristic FROM ccs GROUP BY ALL;

-- vs_paper: every published figure (paper_results) beside ours, one row per figure and matching run and
-- configuration group (null ours: no matching run). Ours come from evals (top1, R@1) and, for
-- maxskew_sum@<k>:<attribute>, from bias summed over occupations; a configuration matches through
-- ablations.reference_model (the paper's model key) and ablations.paper_strategy (random: the mean over
-- seeds, n_seeds of them). heads_from: 'paper' (paper-* strategies: the published heads), 'ccs' (our CCS
-- chose the heads), 'none' (unpruned). difference = ours - theirs; within_tolerance: |difference| <=
-- tolerance. comparable is false where the figures cannot agree by construction (random-init weights;
-- MaxSkew over other occupations or template combination than the paper's 104 and embedding mean); caveat
-- says why, and also names other weights than the reference model's and heads chosen by the offline
-- heuristic judge. ours_low / ours_high: the Wilson 95% interval of ours over the evaluated items (accuracies and
-- recalls; NULL for MaxSkew).
CREATE VIEW vs_paper AS
WITH ours AS (
    SELECT run_id, model, ablation_id, dataset, metric, value, NULL::BIGINT AS n_occupations, NULL::VARCHAR AS combine,
           n
    FROM evals
    UNION ALL
    SELECT run_id, model, ablation_id, dataset, 'maxskew_sum@' || k || ':' || attribute, sum(maxskew), count(*),
           combine, NULL
    FROM bias GROUP BY run_id, model, ablation_id, dataset, k, attribute, combine
),
matched AS (
    SELECT o.run_id, o.model AS our_model, a.reference_model AS model, o.dataset, o.metric,
           a.paper_strategy AS strategy,
           CASE WHEN a.strategy LIKE 'paper-%' THEN 'paper' WHEN a.strategy = 'none' THEN 'none' ELSE 'ccs' END
               AS heads_from,
           a.strategy AS our_strategy, count(*) AS n_seeds, avg(o.value) AS ours,
           max(o.n_occupations) AS n_occupations, max(o.combine) AS combine, bool_or(h.heuristic) AS heuristic,
           max(o.n) AS n
    FROM ours o
    JOIN ablations a USING (run_id, model, ablation_id)
    LEFT JOIN heuristic_judges() h ON h.run_id = o.run_id AND h.model = o.model AND h.judge = a.judge
    WHERE a.paper_strategy IS NOT NULL
    GROUP BY ALL
),
judged AS (
    SELECT *,
           concat_ws('; ',
               CASE WHEN our_model LIKE '%/none' THEN 'random-init weights' END,
               CASE WHEN n_occupations <> 104 THEN 'MaxSkew summed over ' || n_occupations || ' occupations, not 104' END,
               CASE WHEN combine <> 'embedding_mean' THEN 'templates combined by ' || combine || ', not embedding_mean' END,
               CASE WHEN our_model <> model AND our_model NOT LIKE '%/none' THEN 'weights of ' || our_model END,
               CASE WHEN heuristic THEN 'heads chosen by the offline heuristic judge' END) AS caveat,
           NOT (our_model LIKE '%/none' OR coalesce(n_occupations <> 104, false)
                OR coalesce(combine <> 'embedding_mean', false)) AS comparable
    FROM matched
)
SELECT p.model, p.dataset, p.metric, p.strategy, p.value AS theirs, p.approx, p.source,
       j.run_id, j.our_model, j.heads_from, j.our_strategy, j.n_seeds, j.ours, j.ours - p.value AS difference,
       paper_tolerance(p.approx) AS tolerance, abs(j.ours - p.value) <= paper_tolerance(p.approx) AS within_tolerance,
       j.comparable, nullif(j.caveat, '') AS caveat, metric_interval(p.metric, j.ours, j.n).low AS ours_low,
       metric_interval(p.metric, j.ours, j.n).high AS ours_high
FROM paper_results p
LEFT JOIN judged j USING (model, dataset, metric, strategy);

-- paper_agreement: our head sets against the published ones, per run, model, judge and set (high, low,
-- concept:<name>), for the model's reference model (reference_models()). Ours: high / low from the ccs
-- table (ccs_level), concept sets as the prune stage chose them (ablations of strategy 'concept' by that
-- judge; a judge whose CCS chose no concept sets has no concept rows). n_shared heads in both; jaccard =
-- shared / union, precision = shared / ours, recall = shared / published. published_heads in the paper's
-- order and our_ccs, our CCS of each (null: not analysed or unscored), mean_our_ccs their mean.
-- spearman_rho (per run, model and judge, repeated on each of its rows): Spearman's rank correlation, over
-- the analysed heads with a CCS, between our CCS and the published membership (+1 high, -1 low, 0
-- neither), average ranks for ties.
CREATE VIEW paper_agreement AS
WITH refs AS (SELECT * FROM reference_models()),
ours AS (
    SELECT run_id, model, judge, ccs_level(ccs) AS head_set, list(head_label) AS heads
    FROM ccs WHERE ccs IS NOT NULL AND ccs_level(ccs) IN ('high', 'low') GROUP BY ALL
    UNION ALL
    SELECT run_id, model, judge, paper_strategy, heads
    FROM ablations WHERE strategy = 'concept' AND paper_strategy IS NOT NULL AND judge IS NOT NULL
),
published AS (
    SELECT model AS reference_model, head_set, list(head_label ORDER BY position) AS heads
    FROM paper_heads GROUP BY ALL
),
grid AS (  -- per run, model and judge: the published sets of its reference model (concept sets only where
           -- the prune stage chose concept sets by that judge's CCS) and the sets it has itself
    SELECT r.run_id, r.model, r.reference_model, c.judge, p.head_set
    FROM refs r
    JOIN (SELECT DISTINCT run_id, model, judge FROM ccs) c USING (run_id, model)
    JOIN published p USING (reference_model)
    WHERE p.head_set NOT LIKE 'concept:%'
       OR EXISTS (SELECT 1 FROM ablations a WHERE a.run_id = r.run_id AND a.model = r.model AND a.judge = c.judge
                  AND a.strategy = 'concept')
    UNION
    SELECT r.run_id, r.model, r.reference_model, o.judge, o.head_set
    FROM ours o JOIN refs r USING (run_id, model)
),
membership AS (
    SELECT r.run_id, r.model, c.judge, c.ccs::DOUBLE AS x,
           coalesce(max(CASE ph.head_set WHEN 'high' THEN 1 WHEN 'low' THEN -1 END), 0)::DOUBLE AS y
    FROM refs r
    JOIN ccs c USING (run_id, model)
    LEFT JOIN paper_heads ph ON ph.model = r.reference_model AND ph.head_label = c.head_label
    WHERE c.ccs IS NOT NULL
    GROUP BY r.run_id, r.model, c.judge, c.head_label, c.ccs
),
ranked AS (
    SELECT run_id, model, judge,
           rank() OVER (PARTITION BY run_id, model, judge ORDER BY x)
               + (count(*) OVER (PARTITION BY run_id, model, judge, x) - 1) / 2.0 AS rx,
           rank() OVER (PARTITION BY run_id, model, judge ORDER BY y)
               + (count(*) OVER (PARTITION BY run_id, model, judge, y) - 1) / 2.0 AS ry
    FROM membership
),
rho AS (
    SELECT run_id, model, judge, corr(rx, ry) AS spearman_rho FROM ranked GROUP BY ALL
),
published_ccs AS (
    SELECT g.run_id, g.model, g.judge, g.head_set,
           list(c.ccs ORDER BY ph.position) AS our_ccs, avg(c.ccs) AS mean_our_ccs
    FROM grid g
    JOIN paper_heads ph ON ph.model = g.reference_model AND ph.head_set = g.head_set
    LEFT JOIN ccs c ON c.run_id = g.run_id AND c.model = g.model AND c.judge = g.judge AND c.head_label = ph.head_label
    GROUP BY ALL
),
sets AS (  -- per grid row: our heads and the published ones ([] where a side has no such set)
    SELECT g.run_id, g.model, g.reference_model, g.judge, g.head_set, coalesce(o.heads, []) AS mine,
           coalesce(p.heads, []) AS theirs, p.heads AS published_heads
    FROM grid g
    LEFT JOIN ours o USING (run_id, model, judge, head_set)
    LEFT JOIN published p USING (reference_model, head_set)
)
SELECT s.run_id, s.model, s.reference_model, s.judge, s.head_set,
       len(s.mine) AS n_ours, len(s.theirs) AS n_published, len(list_intersect(s.mine, s.theirs)) AS n_shared,
       jaccard(s.mine, s.theirs) AS jaccard, n_shared / nullif(n_ours, 0) AS precision,
       n_shared / nullif(n_published, 0) AS recall,
       s.published_heads, pc.our_ccs, pc.mean_our_ccs, r.spearman_rho, h.heuristic
FROM sets s
LEFT JOIN published_ccs pc USING (run_id, model, judge, head_set)
LEFT JOIN rho r USING (run_id, model, judge)
LEFT JOIN heuristic_judges() h USING (run_id, model, judge);

-- head_importance: each head ablated alone (the single strategy, table head_effects) beside its CCS, one row
-- per run, model, judge, head, dataset, metric and ablation mode: the judge's ccs, level and label (from ccs;
-- judge 'combined' is the majority vote: filter on judge), value, baseline (the unpruned model's value) and
-- change = value - baseline in the metric's units (top1: percent points; < 0: removing the head costs accuracy).
CREATE VIEW head_importance AS
    SELECT e.run_id, e.model, c.judge, e.layer, e.head, e.head_label, e.dataset, e.metric, e.mode,
           c.ccs, c.level, c.label, e.value, e.baseline, e.change, e.n
    FROM head_effects e
    JOIN ccs c ON c.run_id = e.run_id AND c.model = e.model AND c.head_label = e.head_label;

-- Runs that did not finish. The table views hold the rows of every run as written, finished or not; these two views
-- say how each run ended, to mark its rows (JOIN run_status USING (run_id, model)) or keep those of finished runs
-- only (JOIN finished_runs USING (run_id, model)).
-- run_status: one row per run and model that holds rows in any table: status as its runs row has it (running: not
-- ended, or its driver was killed before it could say how; done; failed; interrupted: Ctrl-C or SIGTERM), or
-- 'unrecorded' for rows of a run with no runs row (never started by ccs-ray run, or its record lost); stage (the
-- stage it reached) and error (why it failed) from its runs row.
CREATE VIEW run_status AS
    WITH seen AS (  -- ccs-ray fills in one SELECT run_id, model per table of a run (every table of tables.py but
        -- the paper_* reference tables), joined by UNION
        ${RUN_TABLES}
    ), recorded AS (  -- the newest runs row of each run and model
        SELECT run_id, model, status, stage, error FROM runs
        QUALIFY row_number() OVER (PARTITION BY run_id, model ORDER BY started_at DESC NULLS LAST) = 1
    )
    SELECT run_id, model, coalesce(r.status, 'unrecorded') AS status, r.stage, r.error
    FROM seen LEFT JOIN recorded r USING (run_id, model)
    ORDER BY run_id, model;

-- finished_runs: the runs (per model) whose runs row says done.
CREATE VIEW finished_runs AS SELECT run_id, model FROM run_status WHERE status = 'done';

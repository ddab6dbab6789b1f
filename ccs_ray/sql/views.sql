-- One view per table of ccs_ray/tables.py (SCHEMAS), over the hive-partitioned Parquet of a results root:
--   <root>/<table>/run_id=<run>/model=<quoted model key>/*.parquet
-- ${ROOT} is replaced by the loader (ccs_ray.analytics.connect) with the root as DuckDB sees it: a
-- read-only fsspec filesystem registered with DuckDB, so local and remote roots read alike. A table
-- with no files yet gets, instead of its line here, an empty view with the same typed columns.
-- Outside ccs-ray: replace ${ROOT} with a local path and run this file in the duckdb shell (every table of a
-- root written by `ccs-ray run` has at least a zero-row part, so every view opens).
-- Each view holds the rows of every run as written, finished or not (a failed run's rows, rows of a run with no
-- runs row). How each run ended is the view run_status of macros.sql: JOIN run_status USING (run_id, model) marks
-- the rows, JOIN finished_runs USING (run_id, model) keeps those of finished runs only.
CREATE VIEW runs AS SELECT * FROM read_parquet('${ROOT}/runs/**/*.parquet', hive_partitioning = true, union_by_name = true);
-- shards: while a scan runs its plan ('planned' parts) and its checkpoints ('done' parts) are separate files; one row
-- per shard, the newest state.
CREATE VIEW shards AS SELECT * FROM read_parquet('${ROOT}/shards/**/*.parquet', hive_partitioning = true, union_by_name = true) QUALIFY row_number() OVER (PARTITION BY run_id, model, shard_id ORDER BY status = 'done' DESC, finished_at DESC NULLS LAST) = 1;
CREATE VIEW moments AS SELECT * FROM read_parquet('${ROOT}/moments/**/*.parquet', hive_partitioning = true, union_by_name = true);
CREATE VIEW spans AS SELECT * FROM read_parquet('${ROOT}/spans/**/*.parquet', hive_partitioning = true, union_by_name = true);
CREATE VIEW span_agreement AS SELECT * FROM read_parquet('${ROOT}/span_agreement/**/*.parquet', hive_partitioning = true, union_by_name = true);
CREATE VIEW top_images AS SELECT * FROM read_parquet('${ROOT}/top_images/**/*.parquet', hive_partitioning = true, union_by_name = true);
CREATE VIEW labels AS SELECT * FROM read_parquet('${ROOT}/labels/**/*.parquet', hive_partitioning = true, union_by_name = true);
CREATE VIEW judgments AS SELECT * FROM read_parquet('${ROOT}/judgments/**/*.parquet', hive_partitioning = true, union_by_name = true);
CREATE VIEW ccs AS SELECT * FROM read_parquet('${ROOT}/ccs/**/*.parquet', hive_partitioning = true, union_by_name = true);
CREATE VIEW ablations AS SELECT * FROM read_parquet('${ROOT}/ablations/**/*.parquet', hive_partitioning = true, union_by_name = true);
-- evals and bias: one row per configuration (and, in bias, per occupation); summaries are views (macros.sql).
-- ccs-ray 0.1.0 also wrote summary rows into them (ablation_id 'random:mean' / 'random:std', occupation
-- '__sum__' / '__mean__'): left out here, so results written by that version read like today's.
CREATE VIEW evals AS SELECT * FROM read_parquet('${ROOT}/evals/**/*.parquet', hive_partitioning = true, union_by_name = true) WHERE ablation_id NOT IN ('random:mean', 'random:std');
CREATE VIEW bias AS SELECT * FROM read_parquet('${ROOT}/bias/**/*.parquet', hive_partitioning = true, union_by_name = true) WHERE ablation_id NOT IN ('random:mean', 'random:std') AND occupation NOT IN ('__sum__', '__mean__');
CREATE VIEW head_effects AS SELECT * FROM read_parquet('${ROOT}/head_effects/**/*.parquet', hive_partitioning = true, union_by_name = true);
CREATE VIEW correctness AS SELECT * FROM read_parquet('${ROOT}/correctness/**/*.parquet', hive_partitioning = true, union_by_name = true);
-- judge_calls, errors and conversions: ccs-ray 0.2.0 and earlier named logged_at `at` (a word DuckDB 2 reserves;
-- ccs_ray.tables.RENAMED): files that hold `at` read as logged_at.
CREATE VIEW judge_calls AS SELECT COLUMNS(lambda c: c NOT IN ('logged_at', 'at')), coalesce(*COLUMNS(lambda c: c IN ('logged_at', 'at'))) AS logged_at FROM read_parquet('${ROOT}/judge_calls/**/*.parquet', hive_partitioning = true, union_by_name = true);
CREATE VIEW errors AS SELECT COLUMNS(lambda c: c NOT IN ('logged_at', 'at')), coalesce(*COLUMNS(lambda c: c IN ('logged_at', 'at'))) AS logged_at FROM read_parquet('${ROOT}/errors/**/*.parquet', hive_partitioning = true, union_by_name = true);
CREATE VIEW conversions AS SELECT COLUMNS(lambda c: c NOT IN ('logged_at', 'at')), coalesce(*COLUMNS(lambda c: c IN ('logged_at', 'at'))) AS logged_at FROM read_parquet('${ROOT}/conversions/**/*.parquet', hive_partitioning = true, union_by_name = true);
-- Reference data (ccs_ray.reference: the paper's published head sets, counts and figures), the same in every
-- root; ccs-ray reads them from the installed package, these lines serve plain DuckDB over a run's root.
CREATE VIEW paper_heads AS SELECT * FROM read_parquet('${ROOT}/paper_heads/*.parquet');
CREATE VIEW paper_counts AS SELECT * FROM read_parquet('${ROOT}/paper_counts/*.parquet');
CREATE VIEW paper_results AS SELECT * FROM read_parquet('${ROOT}/paper_results/*.parquet');

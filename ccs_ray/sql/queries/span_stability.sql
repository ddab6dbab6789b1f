-- Are a head's TextSpan texts stable across data folds? Per head and pair of folds (fold0 vs fold1, ...):
-- how many texts both folds chose, their Jaccard overlap, and whether the top text is the same.
WITH folds AS (
    SELECT run_id, model, layer, head, head_label, subset, list(text ORDER BY rank) AS texts
    FROM judged_spans WHERE subset LIKE 'fold%'
    GROUP BY ALL
)
SELECT a.run_id, a.model, a.layer, a.head, a.head_label, a.subset AS fold_a, b.subset AS fold_b,
       len(a.texts) AS n_a, len(b.texts) AS n_b,
       len(list_intersect(list_distinct(a.texts), list_distinct(b.texts))) AS n_shared,
       jaccard(a.texts, b.texts) AS jaccard, a.texts[1] = b.texts[1] AS same_top
FROM folds a JOIN folds b ON a.run_id = b.run_id AND a.model = b.model AND a.layer = b.layer
    AND a.head = b.head AND a.subset < b.subset
ORDER BY a.model, a.run_id, a.layer, a.head, fold_a, fold_b;

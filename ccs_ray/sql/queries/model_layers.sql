-- Layer by layer, model by model: where are a model's high and low CCS heads, and what concepts do its layers'
-- heads encode? One row per run, model and analysed layer, over the CCS of the combined judge (the majority vote):
-- n_heads analysed in the layer; n_high / n_low / n_unscored and share_high / share_low / share_unscored (0..1 of the
-- layer's heads) of CCS level high (= 5), low (<= 1) and unscored (no CCS); families: the heads per label family, most first ({family, n_heads}; their n_heads
-- add to the layer's). A head's label family is the concept family (table concept_families, the default families
-- of ccs_ray.scores.CONCEPT_FAMILIES) whose words hold its combined label, which the judge stage stores normalised
-- (the most common normalised label of the judges); 'other' for a label in no family or no label.
WITH families AS (
    SELECT c.run_id, c.model, c.layer, c.head, c.ccs, coalesce(min(f.family), 'other') AS family
    FROM ccs c LEFT JOIN concept_families f ON f.word = c.label
    WHERE c.judge = 'combined'
    GROUP BY ALL
), per_family AS (
    SELECT run_id, model, layer, family, count(*) AS n_heads FROM families GROUP BY ALL
), per_layer AS (
    SELECT run_id, model, layer, count(*) AS n_heads,
           count(*) FILTER (WHERE ccs_level(ccs) = 'high') AS n_high,
           count(*) FILTER (WHERE ccs_level(ccs) = 'low') AS n_low,
           count(*) FILTER (WHERE ccs_level(ccs) = 'unscored') AS n_unscored
    FROM families GROUP BY ALL
)
SELECT l.run_id, l.model, l.layer, l.n_heads, l.n_high, l.n_low, l.n_unscored, l.n_high / l.n_heads AS share_high,
       l.n_low / l.n_heads AS share_low, l.n_unscored / l.n_heads AS share_unscored,
       list({'family': f.family, 'n_heads': f.n_heads} ORDER BY f.n_heads DESC, f.family) AS families
FROM per_layer l
JOIN per_family f USING (run_id, model, layer)
GROUP BY l.run_id, l.model, l.layer, l.n_heads, l.n_high, l.n_low, l.n_unscored
ORDER BY l.model, l.run_id, l.layer;

-- Which images does each head respond to most? Per run, model and head (stage explain, table top_images): the
-- overall top images (span_rank NULL: largest contribution norm) and, per span (span_rank 1..m, with its text),
-- the images that project most onto the span's direction, best first (position 1..k), with their score
-- (embedding units), image URI and shard. The JPEG thumbnails are top_images.thumbnail.
SELECT run_id, model, layer, head, head_label, span_rank, text, position, image_uri, shard, score
FROM top_images
WHERE direction = 'top'
ORDER BY model, run_id, layer, head, span_rank NULLS FIRST, position;

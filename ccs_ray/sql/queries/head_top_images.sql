-- Which images does each head respond to most, and least? Per run, model and head (stage explain, table top_images):
-- the overall top images (span_rank NULL, direction 'top': largest contribution norm) and, per span (span_rank 1..m,
-- with its text), the images that project most (direction 'top') and least (direction 'bottom') onto the span's
-- direction, most extreme first (position 1..k), with their score (the projection, embedding units; negative at
-- the bottom), image URI and shard. The JPEG thumbnails are top_images.thumbnail.
SELECT run_id, model, layer, head, head_label, span_rank, text, direction, position, image_uri, shard, score
FROM top_images
ORDER BY model, run_id, layer, head, span_rank NULLS FIRST, direction DESC, position;

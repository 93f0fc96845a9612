source AS (
  -- The raw rows with a stable row key and their row text. The key concatenates the key columns,
  -- each rendered so that BigQuery and the embedded engine produce the same text: integers and
  -- strings as they are, FLOAT64 as round(x * 1e6) in integer form, TIMESTAMP as Unix
  -- microseconds, NULL as ''. The row text renders every column the same way: rows with equal
  -- texts are exact duplicates. With window features or joins, the rows come from the raw table
  -- joined with the derived columns' CTEs (one row each per key and time: no row is repeated).
  SELECT
    {{ columns }},
    {{ key_expression }} AS _key{{ row_identity }}
  FROM {{ rows }}
)

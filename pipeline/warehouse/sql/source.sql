source AS (
  -- The raw rows with a stable row key. The key expression concatenates the key columns, each
  -- rendered so that BigQuery and the embedded engine produce the same text: integers and
  -- strings as they are, FLOAT64 as round(x * 1e6) in integer form, TIMESTAMP as Unix
  -- microseconds, NULL as ''.
  SELECT
    {{ columns }},
    {{ key_expression }} AS _key
  FROM {{ table }}
)

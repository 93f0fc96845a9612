-- Rows to score: the raw table's rows the filters keep (at most a time window), each with the row
-- key the split query computes for it, in the definition's column layout (TIMESTAMP as Unix
-- seconds). BigQuery Standard SQL; values are query parameters (@name).
WITH
{{ source_cte }}
SELECT
  _key AS row_key,
  {{ output_columns }}
FROM source
WHERE {{ filters }}

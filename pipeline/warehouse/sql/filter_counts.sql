-- How many rows each named filter removes, applied in order (a row is charged to the first
-- filter it fails), plus the input row count and the exact duplicate rows among the input:
-- input = kept + sum(removed). With window features or joins, per declaration the distinct event
-- ids and the distinct versions of events: equal unless an id has two versions (a verdict: the
-- online store keeps one version per id).
-- BigQuery Standard SQL; values are query parameters (@name).
WITH
{{ source_cte }}
SELECT
  COUNT(*) AS input_rows,
  COUNT(*) - COUNT(DISTINCT _row_text) AS duplicate_rows{{ removed_counts }}{{ event_id_counts }}
FROM source

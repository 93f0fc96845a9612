-- Export one split table to Parquet files on GCS. EXPORT DATA takes no query parameters in its
-- OPTIONS, so the URI is validated against a strict pattern before it is rendered here.
EXPORT DATA OPTIONS (
  uri = '{{ uri }}',
  format = 'PARQUET',
  overwrite = true
) AS
SELECT
  *
FROM {{ split_table }}

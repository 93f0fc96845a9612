-- Filter, sample and split the raw table into train / eval / test.
--
-- BigQuery Standard SQL, written once: the embedded engine runs its sqlglot transpilation.
-- Double-brace slots hold identifiers and expressions rendered from the dataset definition and a
-- validated config; every value (dates, fractions, salt, split boundaries) is a query parameter.
--
-- Split assignment is a pure function of the row key and @salt:
--   _fingerprint = FARM_FINGERPRINT(CONCAT(_key, '|', @salt))
-- The sample filter uses an independent hash of the same key (suffix '|sample').
WITH
{{ source_cte }},
kept AS (
  SELECT
    *,
    {{ label_expression }} AS _label,
    {{ label_value }} AS _label_value,
    FARM_FINGERPRINT(CONCAT(_key, '|', @salt)) AS _fingerprint
  FROM source
  WHERE {{ filters }}
),
assigned AS (
{{ assignment }}
){{ output }}

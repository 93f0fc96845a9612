,
train_label_counts AS (
  -- Minority oversampling, train only: the minority label class of train is replicated until
  -- minority / majority reaches @oversample_target (never below its natural count). Every
  -- minority row gets DIV(target, minority) copies and the first MOD(target, minority) rows in
  -- fingerprint order one more, so the result is exact and deterministic. Eval and test keep
  -- their natural rate.
  -- (Counts cast to INT64: the embedded engine's COUNT_IF is a 128-bit integer.)
  SELECT
    CAST(COUNTIF(_label) AS INT64) AS positives,
    CAST(COUNTIF(NOT _label) AS INT64) AS negatives
  FROM assigned
  WHERE _split = 'train'
),
oversampling_plan AS (
  SELECT
    positives <= negatives AS minority_label,
    LEAST(positives, negatives) AS minority_rows,
    GREATEST(
      LEAST(positives, negatives),
      CAST(CEIL(@oversample_target * GREATEST(positives, negatives)) AS INT64)
    ) AS target_rows
  FROM train_label_counts
),
train_minority AS (
  SELECT
    a.*,
    CAST(
      DIV(p.target_rows, p.minority_rows)
      + IF(
        ROW_NUMBER() OVER (ORDER BY a._fingerprint, a._key) <= MOD(p.target_rows, p.minority_rows),
        1,
        0
      ) AS INT64
    ) AS _copies
  FROM assigned AS a
  CROSS JOIN oversampling_plan AS p
  WHERE a._split = 'train' AND a._label = p.minority_label
)

-- Output: the dataset definition's columns in order (TIMESTAMP as Unix seconds) and the split.
SELECT
  {{ output_columns }},
  _split
FROM train_minority
CROSS JOIN UNNEST(GENERATE_ARRAY(1, _copies)) AS _copy
UNION ALL
SELECT
  {{ output_columns }},
  _split
FROM assigned AS a
CROSS JOIN oversampling_plan AS p
WHERE NOT (a._split = 'train' AND COALESCE(a._label = p.minority_label, FALSE))

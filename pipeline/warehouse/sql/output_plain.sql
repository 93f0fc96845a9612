
-- Output: the dataset definition's columns in order (TIMESTAMP as Unix seconds) and the split.
SELECT
  {{ output_columns }},
  _split
FROM assigned

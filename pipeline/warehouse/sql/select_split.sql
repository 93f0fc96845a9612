-- One split of the assigned rows, without the split column (BigQuery: destination table per
-- split). Values are query parameters.
SELECT
  * EXCEPT (_split)
FROM {{ assigned_table }}
WHERE _split = @split

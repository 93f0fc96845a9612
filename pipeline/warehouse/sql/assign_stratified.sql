  -- Stratified split: inside each stratum, rows ordered by _fingerprint sit at positions
  -- (r - 0.5) / n; positions below @train_upper / @hash_buckets go to train, below
  -- @eval_upper / @hash_buckets to eval, the rest to test. Every stratum keeps its share in every
  -- split (to within one row). Compared in integers so that both engines agree exactly.
  SELECT
    * EXCEPT (_position, _stratum_rows),
    CASE
      WHEN (2 * _position - 1) * @hash_buckets < 2 * @train_upper * _stratum_rows THEN 'train'
      WHEN (2 * _position - 1) * @hash_buckets < 2 * @eval_upper * _stratum_rows THEN 'eval'
      ELSE 'test'
    END AS _split
  FROM (
    SELECT
      *,
      ROW_NUMBER() OVER (PARTITION BY {{ stratum }} ORDER BY _fingerprint, _key) AS _position,
      COUNT(*) OVER (PARTITION BY {{ stratum }}) AS _stratum_rows
    FROM kept
  )

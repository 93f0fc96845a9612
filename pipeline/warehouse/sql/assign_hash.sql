  -- Hash split: bucket = MOD(ABS(_fingerprint), @hash_buckets); buckets below @train_upper go to
  -- train, below @eval_upper to eval, the rest to test. Shares converge on the ratios.
  SELECT
    *,
    CASE
      WHEN MOD(ABS(_fingerprint), @hash_buckets) < @train_upper THEN 'train'
      WHEN MOD(ABS(_fingerprint), @hash_buckets) < @eval_upper THEN 'eval'
      ELSE 'test'
    END AS _split
  FROM kept

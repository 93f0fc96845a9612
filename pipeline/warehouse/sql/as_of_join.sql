{{ cte_name }} AS (
  -- As-of join {{ feature }}: for every (key, time t) of the main table, the side table's row
  -- for the key with the latest time such that obs.time + lag <= t (and, with a maximum age,
  -- obs.time >= t - max_age). Observations enter the stream at obs.time + lag, so the frame
  -- ending at CURRENT ROW (peers included: an observation exactly at t - lag qualifies) finds
  -- the matching observation's time; the side table's distinct rows have one version per
  -- (key, time) (checked before the split), so the join back to them brings one row. Frame offsets are validated integers.
  SELECT
    _p.*,
    {{ joined_columns }}
  FROM (
    SELECT
      * EXCEPT (_point)
    FROM (
      SELECT
        {{ key_aliases }},
        _t,
        _point,
        MAX(_obs_t) OVER (
          PARTITION BY {{ key_aliases }}
          ORDER BY _t
          RANGE BETWEEN {{ frame_start }} AND CURRENT ROW
        ) AS _match_t
      FROM (
        SELECT DISTINCT
          {{ point_keys }},
          UNIX_SECONDS({{ row_time }}) AS _t,
          TRUE AS _point,
          CAST(NULL AS INT64) AS _obs_t
        FROM {{ main_table }}
        WHERE {{ point_filter }}
        UNION ALL
        SELECT
          {{ observation_keys }},
          UNIX_SECONDS({{ observation_time }}) + {{ lag }} AS _t,
          FALSE AS _point,
          UNIX_SECONDS({{ observation_time }}) AS _obs_t
        FROM {{ side_table }}
        WHERE {{ observation_filter }}
      )
    )
    WHERE _point
  ) AS _p
  LEFT JOIN {{ distinct_side_table }} AS _obs
    ON {{ match_condition }}
)

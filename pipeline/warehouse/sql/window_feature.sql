{{ cte_name }} AS (
  -- Window feature {{ feature }}: for every (key, time) of the main table, aggregates of the
  -- event table's values over frames of whole Unix seconds. The rows' (key, time) points, with a
  -- NULL value, and the events share one stream, so the frame
  --   RANGE BETWEEN <window> PRECEDING AND <lag + 1> PRECEDING
  -- of a point at time t holds exactly the events with e.time >= t - window and e.time + lag < t
  -- (strictly before t). Aggregates ignore NULL values (the points' and the events' own), COUNT
  -- counts non-null values and is 0 over an empty frame, where the others are NULL. Events come
  -- from the whole event table: no filter, time window or sample of the rows removes one.
  -- Frame offsets are validated integers rendered as literals (a frame takes constants).
  SELECT
    * EXCEPT (_point)
  FROM (
    SELECT
      {{ key_aliases }},
      _t,
      _point,
      {{ aggregates }}
    FROM (
      SELECT
        *{{ tie_value }}
      FROM (
        SELECT DISTINCT
          {{ point_keys }},
          UNIX_SECONDS({{ row_time }}) AS _t,
          CAST(NULL AS FLOAT64) AS _v,
          TRUE AS _point
        FROM {{ main_table }}
        WHERE {{ point_filter }}
        UNION ALL
        SELECT
          * EXCEPT (_event_id),
          FALSE AS _point
        FROM (
          -- One event per id: copies of an event (a row loaded twice) count once, as online.
          SELECT DISTINCT
            {{ event_id }} AS _event_id,
            {{ event_keys }},
            UNIX_SECONDS({{ event_time }}) AS _t,
            {{ event_value }} AS _v
          FROM {{ event_table }}
          WHERE {{ event_filter }}
        )
      )
    )
    WINDOW
      {{ frames }}
  )
  WHERE _point
)

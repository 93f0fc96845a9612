"""Online path of the derived columns: events in, point-in-time values out.

The dataset definition declares window features and point-in-time joins once
(:mod:`pipeline.definition.windows`); the warehouse SQL computes them for training. Here is the
serving side:

* :mod:`pipeline.online.records` turns an event (a row of an event table) into what the store
  keeps for each declaration that reads its table: entity key, event id, event time, payload.
* :mod:`pipeline.online.stores`: the online store, an embedded SQLite file or Redis, behind one
  interface; writes are idempotent by event id, old events are evicted past the retention.
* :mod:`pipeline.online.stream`: the streaming Beam pipeline (Pub/Sub on Dataflow; files on the
  DirectRunner; a TestStream in tests) that writes events into a store.
* :mod:`pipeline.online.aggregates`: the point-in-time rule applied at read time, for any t.
* :mod:`pipeline.online.enrich`: what the server calls to fill a request's derived columns.
* :mod:`pipeline.online.replay`: the parity replay (stream the events, query every eval row at
  its own time, compare with the batch SQL's values and predictions).

No module here imports TensorFlow; Beam only in ``stream``.
"""

"""``pipeline.serving --online-store``: the server fills the window features of a JSON request.

Over real HTTP on loopback against the trained taxi export: a client sends only what it knows,
the server reads the pickup area's recent trips from the store (fed by the real streaming job)
and answers exactly what the export answers for the row with those values filled in.
"""

from __future__ import annotations

import shutil

import numpy as np
import pyarrow.parquet as pq
import pytest
import tensorflow as tf

from pipeline.export import EXAMPLES_INPUT, SERVING_SIGNATURE
from pipeline.online.enrich import Enricher
from pipeline.online.jobs import run_files
from pipeline.online.stores import open_store
from pipeline.online.stream import event_message
from pipeline.serving.examples import ExampleEncoder
from tests.test_serve import MODEL, running_server

pytestmark = pytest.mark.slow
PREDICT = f"/v1/models/{MODEL}:predict"


@pytest.fixture(scope="module")
def online(tmp_path_factory, small_splits, taxi):
    """A store holding every trip of the small splits, written by the streaming job."""
    root = tmp_path_factory.mktemp("online_serving")
    events, with_area = root / "events.jsonl", 0
    with events.open("w") as sink:
        for split in ("train", "eval"):
            for row in pq.read_table(small_splits[split]).to_pylist():
                raw = {c.name: row[c.name] for c in taxi.columns}
                sink.write(event_message(taxi.table, raw) + "\n")
                with_area += raw["pickup_community_area"] is not None
    uri = f"sqlite:{root / 'online.sqlite'}"
    result = run_files(taxi, uri, [str(events)], keep_history=True)
    # A trip without a pickup area is no event of the window (its key is NULL).
    assert result.invalid_events == 0 and result.records_written == with_area > 3000
    return root, uri


def test_the_server_fills_window_features_from_the_store(
    online, trained_export, small_splits, taxi
):
    root, uri = online
    _, exported = trained_export
    shutil.copytree(exported.export_dir, root / "base" / "1")
    rows = pq.read_table(small_splits["eval"]).to_pylist()[:20]
    sent = [{c.name: r[c.name] for c in taxi.client_columns if r[c.name] is not None} for r in rows]
    store = open_store(uri)
    enriched = Enricher(taxi, store).enrich(sent)
    store.close()
    assert any((r["pickup_area_trips_count_1d"] or 0) > 0 for r in enriched)
    serve = tf.saved_model.load(str(exported.export_dir)).signatures[SERVING_SIGNATURE]
    encoder = ExampleEncoder(taxi)

    def export_says(json_rows):
        examples = tf.constant(encoder.encode_rows(json_rows, "rows"))
        return serve(**{EXAMPLES_INPUT: examples})["probabilities"].numpy()

    with running_server(root / "base", root, "--online-store", uri) as client:
        status, body = client.post(PREDICT, {"instances": sent})
        assert status == 200, body
        served = np.asarray([p["probabilities"] for p in body["predictions"]], np.float32)
        np.testing.assert_allclose(served, export_says(enriched), rtol=1e-6, atol=1e-7)
        # Without the store's values the answer would differ: the features matter.
        assert not np.allclose(served, export_says(sent), rtol=1e-6, atol=1e-7)
        status, body = client.post(
            PREDICT, {"instances": [{**sent[0], "pickup_area_trips_count_1h": 5}]}
        )
        assert status == 400 and "filled by the server" in body["error"]

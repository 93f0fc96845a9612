"""The same model saved after more or fewer earlier TensorFlow objects is the same bytes."""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from pipeline import canonical_saved_model, storage


class Scaler(tf.Module):
    """A small model with a variable, a lookup table and two traced signatures."""

    def __init__(self):
        super().__init__()
        self.scale = tf.Variable(2.0)
        self.table = tf.lookup.StaticHashTable(
            tf.lookup.KeyValueTensorInitializer(["a", "b"], [1, 2]), default_value=0
        )

    @tf.function(input_signature=[tf.TensorSpec([None], tf.float32)])
    def scaled(self, x):
        return {"y": x * self.scale}

    @tf.function(input_signature=[tf.TensorSpec([None], tf.string)])
    def looked_up(self, keys):
        return {"ids": self.table.lookup(keys)}


def _save(directory: Path, earlier_objects: int) -> str:
    """Align the counter, number ``earlier_objects`` things first, then save the model."""
    from tensorflow.python.framework import ops

    canonical_saved_model.align_name_counter()
    for _ in range(earlier_objects):
        ops.uid()
    module = Scaler()
    signatures = {"scaled": module.scaled, "looked_up": module.looked_up}
    tf.saved_model.save(module, str(directory), signatures=signatures)
    return storage.sha256(directory / canonical_saved_model.SAVED_MODEL_FILE)


def test_counter_values_in_names_do_not_change_the_bytes(tmp_path):
    first, second = tmp_path / "first", tmp_path / "second"
    raw = [_save(first, earlier_objects=0), _save(second, earlier_objects=7)]
    assert raw[0] != raw[1]  # the names carry the counter: this is what canonicalize removes
    for directory in (first, second):
        canonical_saved_model.canonicalize(str(directory))
    assert storage.tree_digest(first) == storage.tree_digest(second)
    loaded = tf.saved_model.load(str(second))  # every renamed reference still resolves
    assert loaded.signatures["scaled"](tf.constant([1.5]))["y"].numpy().tolist() == [3.0]
    ids = loaded.signatures["looked_up"](tf.constant(["b", "z"]))["ids"].numpy().tolist()
    assert ids == [2, 0]

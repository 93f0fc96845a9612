"""SavedModels written in one canonical byte order, so the same model is the same bytes.

TFT assembles transform_fn from the analyzers' results as Beam delivers them, so the nodes of
its graph come out in a different order from run to run: the same graph, different bytes, and
every digest downstream (the transform graph, the export that embeds it) differs. A GraphDef's
and a FunctionDef's node order carries no meaning (nodes refer to each other by name), so
sorting them by name, and the function library by signature name, yields one canonical
serialization; the fingerprint file that TensorFlow keeps beside the graph is then recomputed.

Function names (and some node names) end in a process-wide counter
(``__inference_signature_wrapper_51794``): how many objects the process had numbered before. A
stage run in a process of its own (a resumed run, one task per stage) starts lower than one that
follows other stages, so the same model got other names. :func:`align_name_counter` moves the
counter to the same round value before a stage builds its model, so that every number it draws
is at least that value; :func:`canonicalize` then renumbers those numbers in names by rank
(their order is the order the stage's own code drew them in), so a few draws more or less
elsewhere in the process no longer show.
"""

from __future__ import annotations

import re
from typing import Any

from pipeline import storage

SAVED_MODEL_FILE = "saved_model.pb"
NAME_COUNTER_STEP = 1_000_000  # far above what a whole run numbers (about 10^5); 0.2 s to skip
FINGERPRINT_FILE = "fingerprint.pb"


def canonicalize(directory: str) -> None:
    """Rewrite ``directory/saved_model.pb`` in canonical order (and its fingerprint)."""
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model.pywrap_saved_model import fingerprinting

    path = storage.join(directory, SAVED_MODEL_FILE)
    model = saved_model_pb2.SavedModel.FromString(storage.read_bytes(path))
    _renumber_counter_values(model)
    for meta_graph in model.meta_graphs:
        _sort(meta_graph.graph_def.node, lambda node: node.name)
        library = meta_graph.graph_def.library
        _sort(library.function, lambda function: function.signature.name)
        for function in library.function:
            _sort(function.node_def, lambda node: node.name)
        _sort(library.gradient, lambda gradient: gradient.function_name)
    storage.write_bytes_atomic(path, model.SerializeToString(deterministic=True))
    if storage.isfile(storage.join(directory, FINGERPRINT_FILE)):
        fingerprint = fingerprinting.CreateFingerprintDef(str(directory))
        storage.write_bytes_atomic(storage.join(directory, FINGERPRINT_FILE), fingerprint)


def _sort(repeated, key) -> None:
    items = sorted(repeated, key=key)
    copies = [type(item)() for item in items]
    for copy, item in zip(copies, items, strict=True):
        copy.CopyFrom(item)
    del repeated[:]
    repeated.extend(copies)


def align_name_counter(step: int = NAME_COUNTER_STEP) -> int:
    """Advance TensorFlow's process-wide uid counter to the next multiple of ``step``; returns
    it. TensorFlow has no setter: the counter only moves by being drawn from."""
    from tensorflow.python.framework import ops

    current = ops.uid()
    target = (current // step + 1) * step
    for _ in range(target - current - 1):
        ops.uid()
    return target


# A counter value in a name: a whole run of digits that ends the name or a part of it
# (``..._lookup_1049925``, ``loc:@model/embedding_lookup/1049925``, ``key_value_init1049925/...``,
# an argument's ``_user_specified_name`` "1049925").
_COUNTER_TOKEN = re.compile(r"(?<![0-9])(\d{7,})(?![0-9A-Za-z])")
# Attribute values are byte strings: names in them (shared_name, _class, ...) are rewritten too.
_ATTR_MESSAGES = ("tensorflow.AttrValue", "tensorflow.AttrValue.ListValue")


def _renumber_counter_values(model: Any) -> None:
    """Replace every counter value (at least :data:`NAME_COUNTER_STEP`) in the model's string
    fields and string attributes by its rank among them: consistently everywhere, so every
    reference still finds what it names."""
    found: set[int] = set()

    def collect(text: str) -> str:
        found.update(_counter_values(text))
        return text

    _visit_strings(model, collect)
    ranks = {value: NAME_COUNTER_STEP + rank for rank, value in enumerate(sorted(found))}
    if not ranks:
        return

    def renumber(text: str) -> str:
        return _COUNTER_TOKEN.sub(lambda m: str(ranks.get(int(m.group(1)), m.group(1))), text)

    _visit_strings(model, renumber)


def _counter_values(text: str) -> list[int]:
    values = (int(match) for match in _COUNTER_TOKEN.findall(text))
    return [value for value in values if value >= NAME_COUNTER_STEP]


def _visit_strings(message: Any, rewrite) -> None:
    """Apply ``rewrite`` to every string field and string map key/value below ``message``, and
    to the UTF-8 byte strings of attribute values."""
    from google.protobuf.descriptor import FieldDescriptor

    for field, value in message.ListFields():
        if field.type == FieldDescriptor.TYPE_BYTES and message.DESCRIPTOR.full_name in (
            _ATTR_MESSAGES
        ):
            if field.label == FieldDescriptor.LABEL_REPEATED:
                value[:] = [_rewrite_bytes(v, rewrite) for v in value]
            else:
                setattr(message, field.name, _rewrite_bytes(value, rewrite))
        elif field.type == FieldDescriptor.TYPE_STRING:
            if field.label == FieldDescriptor.LABEL_REPEATED:
                value[:] = [rewrite(v) for v in value]
            else:
                setattr(message, field.name, rewrite(value))
        elif field.type == FieldDescriptor.TYPE_MESSAGE:
            if field.message_type.GetOptions().map_entry:
                _visit_map(field, value, rewrite)
            elif field.label == FieldDescriptor.LABEL_REPEATED:
                for item in value:
                    _visit_strings(item, rewrite)
            else:
                _visit_strings(value, rewrite)


def _rewrite_bytes(value: bytes, rewrite) -> bytes:
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return value  # not text: no name in it
    return rewrite(text).encode("utf-8")


def _visit_map(field: Any, mapping: Any, rewrite) -> None:
    """A map field, rebuilt whole (a rewritten key may be another entry's old key)."""
    from google.protobuf.descriptor import FieldDescriptor

    value_field = field.message_type.fields_by_name["value"]
    is_message = value_field.type == FieldDescriptor.TYPE_MESSAGE
    items = []
    for key in list(mapping):
        value = mapping[key]
        if is_message:
            copy = type(value)()
            copy.CopyFrom(value)
            _visit_strings(copy, rewrite)
            value = copy
        elif isinstance(value, str):
            value = rewrite(value)
        items.append((rewrite(key) if isinstance(key, str) else key, value))
    mapping.clear()
    for key, value in items:
        if is_message:
            mapping[key].CopyFrom(value)
        else:
            mapping[key] = value

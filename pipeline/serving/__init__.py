"""Serve versioned exports over TensorFlow Serving's REST API (see :mod:`pipeline.serve`).

Modules: ``layout`` (the model base on disk) and ``errors`` are pure Python, so
:mod:`pipeline.push` stays cheap to import; ``examples`` (JSON -> tf.Example), ``protocol`` (TF
Serving's request and response JSON), ``models`` (loading, hot swap), ``request_log``,
``service`` (the handlers without HTTP) and ``app`` (FastAPI routes) import TensorFlow.
"""

"""Preprocessing pipeline: warehouse split, validation, transform, train, export, serve.

Submodules import TensorFlow lazily where they can, so light entry points (the warehouse CLI, DAG
parsing) stay fast.
"""

import os

# TFT's transform layer is a Keras 2 layer; TF 2.16 defaults to Keras 3 unless this is set before
# TensorFlow is first imported. Every entry point imports this package first.
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

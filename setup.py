"""Shim for Beam's ``--setup_file``: Dataflow workers install this package from its sdist.

Everything about the package is in pyproject.toml; Beam builds the sdist through this file.
"""

from setuptools import setup

setup()

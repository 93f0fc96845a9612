"""Reviewed data contracts, one folder per schema: ``schemas/<name>/schema.pbtxt``.

A package so the schemas ship with the pipeline (a Dataflow worker or a serving image installs
the package, not the repository); :func:`pipeline.validation.schema.schema_path` finds them.
"""

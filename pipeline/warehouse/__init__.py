"""Warehouse stage: BigQuery SQL that filters, samples and splits the raw table.

The SQL is written once in BigQuery Standard SQL (``sql/*.sql``) and runs either on BigQuery or,
transpiled by sqlglot, on an embedded DuckDB file with identical results.
"""

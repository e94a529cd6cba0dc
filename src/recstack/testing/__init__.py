"""Helpers for recstack's own tests and benchmarks (and for trying optional backends locally).

* :mod:`recstack.testing.postgres`: a throwaway PostgreSQL + pgvector server
  (``local_postgres()``) for the pgvector index.
"""

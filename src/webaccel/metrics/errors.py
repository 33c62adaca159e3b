"""Errors of the metrics store, in the :mod:`webaccel.errors` tree.

``MetricsLockedError`` (TIMEOUT): another process held the DuckDB file longer
than we were willing to wait.  ``MetricsSchemaError`` (INTERNAL): the file was
written by a newer webaccel.  ``MetricsStoreError`` (INTERNAL): any other
DuckDB failure, chained from the DuckDB exception.
"""
from __future__ import annotations

from webaccel.errors import InternalError, TimeoutError_


class MetricsStoreError(InternalError):
    """DuckDB failed on the metrics file; the message names the file."""


class MetricsLockedError(TimeoutError_):
    """The metrics file stayed locked by another process past the timeout."""


class MetricsSchemaError(MetricsStoreError):
    """The metrics file has a schema this webaccel does not know."""

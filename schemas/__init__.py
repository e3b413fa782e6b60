"""Arrow schemas of everything altbeam writes: catalog, errors, writeback log.

Imports nothing of ours (see DESIGN.md); every other package reads its tables
through these definitions so the columns are declared in exactly one place.
"""
from altbeam.schemas.catalog import (
    CATALOG_SCHEMA,
    ERRORS_SCHEMA,
    SCHEMA_VERSION,
    TABLES,
    WRITEBACK_SCHEMA,
    table_dir,
    table_prefix,
)

__all__ = [
    "CATALOG_SCHEMA",
    "ERRORS_SCHEMA",
    "SCHEMA_VERSION",
    "TABLES",
    "WRITEBACK_SCHEMA",
    "table_dir",
    "table_prefix",
]

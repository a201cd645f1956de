"""The Store on Postgres with pgvector, through psycopg 3: the embedded default, Supabase, or
any other.

One module per concern, each holding the SQL of its tables:

* ``store``: ``PostgresStore``, each method one statement or one transaction over the parts;
* ``documents``: chunk rows and their search; ``embedding_cache``: vectors bought, not yet written;
* ``ledger``: which file versions the index holds or failed on, and its runs; the read-only
  queries ``tidal status`` and ``tidal failed`` make without a store;
* ``claims``: which store works on which file, and the presence that frees a dead one's files;
* ``vector_index``: dropping and building the HNSW index around bulk writes;
* ``schema``: schema.sql for a vector width, applied only when not current;
* ``connection``: the pool, and connection errors as outages to ride out.
"""

from tidal.store.postgres.documents import chunk_id
from tidal.store.postgres.ledger import failed_files, index_status, record_run
from tidal.store.postgres.schema import VECTOR_INDEX_SQL, ensure_schema, schema_sql
from tidal.store.postgres.store import PostgresStore

__all__ = [
    "VECTOR_INDEX_SQL",
    "PostgresStore",
    "chunk_id",
    "ensure_schema",
    "failed_files",
    "index_status",
    "record_run",
    "schema_sql",
]

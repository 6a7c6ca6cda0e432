"""
PostgreSQL, the shared database of many nodes (C{[storage] backend =
"postgresql"}, issue 19): the connection pool (L{pymailer.pg.pool}) and the
versioned schema (L{pymailer.pg.schema}).  The backends on it live beside
their SQLite and file twins: L{pymailer.queue.spool_pg},
L{pymailer.auth.directory_pg}.

Why blocking psycopg in the thread pool rather than its asyncio API: every
seam these backends implement (L{pymailer.interfaces.ISpool},
L{pymailer.interfaces.IAccountDirectory}) is a blocking interface that the
server already calls through its thread pool, so the same callers drive
the file, SQLite and PostgreSQL backends alike; the asyncio API would need
Twisted's asyncio reactor under the whole server, and a second, Deferred-
returning version of each interface.

Nothing here is imported unless the configuration asks for PostgreSQL:
psycopg is an optional dependency (C{pip install 'pymailer[postgresql]'}).
"""

"""
Counting what the SQLite store reads: a stand-in for the store's
per-thread connection that counts the rows each statement returns, so a
test can say "this refresh read one message row" instead of timing it.
"""


class _CountingCursor:
    def __init__(self, counter, sql, cursor):
        self._counter, self._sql, self._cursor = counter, sql, cursor

    def _counted(self, n):
        self._counter.rows.append((self._sql, n))

    def __iter__(self):
        for row in self._cursor:
            self._counted(1)
            yield row

    def fetchone(self):
        row = self._cursor.fetchone()
        self._counted(row is not None)
        return row

    def fetchall(self):
        rows = self._cursor.fetchall()
        self._counted(len(rows))
        return rows


class RowCounter:
    """
    Wraps the connection L{pymailer.store.sqlite.SQLiteStore} uses in the
    calling thread (the harness runs store calls inline, in that thread).

    @ivar rows: C{[(sql, rows)]}, one entry per row fetched.
    """

    def __init__(self, store):
        self._db = store._db()
        self.rows = []
        store._local.db = self

    def execute(self, sql, args=()):
        return _CountingCursor(self, sql, self._db.execute(sql, args))

    def __getattr__(self, name):
        return getattr(self._db, name)

    def take(self):
        """
        @return: C{{table: rows}} read since the last call, C{"*"} for all
            tables (a statement counts for the table after its C{FROM}).
        """
        rows, self.rows = self.rows, []
        counts = {"*": 0}
        for sql, n in rows:
            words = sql.split()
            table = words[words.index("FROM") + 1] if "FROM" in words else "?"
            counts[table] = counts.get(table, 0) + n
            counts["*"] += n
        return counts

"""
The classifier's state in one SQLite file (C{data_dir/spam/classifier.sqlite}):
per-user token counts and training totals, what each trained message was
trained as (by a digest of its content, so moving it back untrains it),
per-user sender reputation, and the operator's verdict counters.

WAL with a busy timeout: several worker processes share it.  One
connection per thread (L{pymailer.sqlitedb.ThreadConnections}, opened on
first use: a server without the classifier makes no file); every method
blocks, so call it in a thread pool.
"""

import threading

from pymailer.spam.bayes import spamProbability
from pymailer.sqlitedb import ThreadConnections

SPAM = "spam"
HAM = "ham"
LABELS = (SPAM, HAM)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tokens (
    user TEXT NOT NULL, token TEXT NOT NULL,
    spam INTEGER NOT NULL DEFAULT 0, ham INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, token)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS totals (
    user TEXT PRIMARY KEY,
    spam INTEGER NOT NULL DEFAULT 0, ham INTEGER NOT NULL DEFAULT 0);
CREATE TABLE IF NOT EXISTS trained (
    user TEXT NOT NULL, digest TEXT NOT NULL, label TEXT NOT NULL,
    PRIMARY KEY (user, digest)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS senders (
    user TEXT NOT NULL, kind TEXT NOT NULL, value TEXT NOT NULL,
    spam INTEGER NOT NULL DEFAULT 0, ham INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (user, kind, value)) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS verdicts (
    recipient TEXT NOT NULL, "check" TEXT NOT NULL, action TEXT NOT NULL,
    n INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (recipient, "check", action)) WITHOUT ROWID;
"""

# SQLite's default limit on host parameters is 999 in old builds.
_CHUNK = 500


def dbPath(dataDir):
    return dataDir / "spam" / "classifier.sqlite"


class ClassifierDB:
    def __init__(self, path):
        self.path = path
        self._connections = None
        self._opening = threading.Lock()

    def _open(self):
        """The file's L{ThreadConnections}, made (with its directory) on first use."""
        with self._opening:
            if self._connections is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                # NORMAL, not FULL: a lost last training after a power cut
                # costs nothing worth an fsync per message moved.
                self._connections = ThreadConnections(self.path, _SCHEMA)
            return self._connections

    def _db(self):
        return (self._connections or self._open()).db()

    def _write(self, work, *args):
        with (self._connections or self._open()).transaction() as db:
            return work(db, *args)

    def close(self):
        """Close every thread's connection (at shutdown); a later use opens again."""
        with self._opening:
            connections, self._connections = self._connections, None
        if connections is not None:
            connections.close()

    # The classifier

    def totals(self, user):
        """C{(spam, ham)} messages C{user} trained."""
        row = self._db().execute("SELECT spam, ham FROM totals WHERE user=?", (user,)).fetchone()
        return tuple(row) if row else (0, 0)

    def counts(self, user, tokens):
        """C{{token: (spam, ham)}} for the C{tokens} C{user} has seen."""
        db, tokens, found = self._db(), list(tokens), {}
        for i in range(0, len(tokens), _CHUNK):
            chunk = tokens[i:i + _CHUNK]
            marks = ",".join("?" * len(chunk))
            for token, spam, ham in db.execute(
                    f"SELECT token, spam, ham FROM tokens WHERE user=? AND token IN ({marks})",
                    [user, *chunk]):
                found[token] = (spam, ham)
        return found

    def train(self, user, digest, tokens, label):
        """
        Count C{tokens} as C{label} for C{user}, once per message (by
        C{digest}): a message trained as the other label before is
        untrained from it first.

        @return: the label it had before (C{None}: new), or C{label} when
            nothing changed.
        """
        assert label in LABELS
        return self._write(self._train, user, digest, tuple(tokens), label)

    def _train(self, db, user, digest, tokens, label):
        row = db.execute("SELECT label FROM trained WHERE user=? AND digest=?",
                         (user, digest)).fetchone()
        before = row[0] if row else None
        if before == label:
            return label
        db.execute("INSERT OR IGNORE INTO totals (user) VALUES (?)", (user,))
        if before is not None:
            # Column names come from LABELS, never from input.
            db.execute(f"UPDATE totals SET {before} = max({before} - 1, 0) WHERE user=?",
                       (user,))
            db.executemany(
                f"UPDATE tokens SET {before} = max({before} - 1, 0) WHERE user=? AND token=?",
                [(user, t) for t in tokens])
        db.execute(f"UPDATE totals SET {label} = {label} + 1 WHERE user=?", (user,))
        db.executemany(
            f"INSERT INTO tokens (user, token, {label}) VALUES (?, ?, 1)"
            f" ON CONFLICT (user, token) DO UPDATE SET {label} = {label} + 1",
            [(user, t) for t in tokens])
        db.execute("INSERT OR REPLACE INTO trained VALUES (?, ?, ?)", (user, digest, label))
        return before

    def trainingCounts(self, user=None):
        """C{[(user, spam, ham)]}, every user's or one's."""
        if user is None:
            return self._db().execute(
                "SELECT user, spam, ham FROM totals ORDER BY user").fetchall()
        return [(user, *self.totals(user))]

    def resetTraining(self, user):
        """
        Forget everything C{user}'s filter learnt: token counts, totals,
        which messages it was trained on, sender reputation (the user's own
        "start again"; the operator's verdict counters stay).
        """
        def work(db):
            for table in ("tokens", "totals", "trained", "senders"):
                # Table names from this tuple, never from input.
                db.execute(f"DELETE FROM {table} WHERE user=?", (user,))

        self._write(work)

    # Sender reputation

    def senders(self, user, limit=50):
        """
        C{[(kind, value, spam, ham)]}: the senders C{user}'s past verdicts
        know most about, most verdicts first.
        """
        return self._db().execute(
            "SELECT kind, value, spam, ham FROM senders WHERE user=?"
            " ORDER BY spam + ham DESC, kind, value LIMIT ?", (user, limit)).fetchall()

    def forgetSender(self, user, kind, value):
        """Drop one sender's reputation for C{user} (a wrong verdict learnt)."""
        self._write(lambda db: db.execute(
            "DELETE FROM senders WHERE user=? AND kind=? AND value=?", (user, kind, value)))

    def senderHistory(self, user, keys):
        """C{{(kind, value): (spam, ham)}} of past verdicts for C{user}."""
        found = {}
        for kind, value in keys:
            row = self._db().execute(
                "SELECT spam, ham FROM senders WHERE user=? AND kind=? AND value=?",
                (user, kind, value)).fetchone()
            if row:
                found[(kind, value)] = tuple(row)
        return found

    def recordSender(self, user, keys, label):
        """One more C{label} verdict for each C{(kind, value)} of C{keys}."""
        assert label in LABELS

        def work(db):
            db.executemany(
                f"INSERT INTO senders (user, kind, value, {label}) VALUES (?, ?, ?, 1)"
                f" ON CONFLICT (user, kind, value) DO UPDATE SET {label} = {label} + 1",
                [(user, kind, value) for kind, value in keys])

        self._write(work)

    # The operator's counters

    def addVerdicts(self, counts):
        """Add C{{(recipient, check, action): n}}."""

        def work(db):
            db.executemany(
                'INSERT INTO verdicts VALUES (?, ?, ?, ?) ON CONFLICT (recipient, "check", action)'
                " DO UPDATE SET n = n + excluded.n",
                [(*key, n) for key, n in counts.items()])

        self._write(work)

    def verdictCounts(self, recipient=None):
        """C{[(check, action, n)]}, summed over recipients or for one."""
        where, args = ("WHERE recipient=?", (recipient,)) if recipient else ("", ())
        return self._db().execute(
            f'SELECT "check", action, sum(n) FROM verdicts {where}'
            ' GROUP BY "check", action ORDER BY "check", action', args).fetchall()


def probability(db, user, tokens, minTrain):
    """
    C{user}'s spam probability for a message of C{tokens}, or C{None} while
    their filter has seen fewer than C{minTrain} spam or ham: an untrained
    filter judges nothing.
    """
    spam, ham = db.totals(user)
    if spam < minTrain or ham < minTrain:
        return None
    return spamProbability(db.counts(user, tokens), spam, ham)

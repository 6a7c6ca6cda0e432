"""
The PostgreSQL schema, versioned: L{MIGRATIONS} lists the steps from an
empty database to today's; C{pymailer db migrate} applies the missing ones
(L{migrate}), and the server and the admin commands refuse to run on a
database whose schema is not the version they know (L{checkSchema}), with
a message saying what to do.

Why the server does not migrate at start: with many nodes on one database,
a node being upgraded must not change the schema under the others still
running the old version; the administrator migrates once, deliberately
(after a backup), then upgrades the nodes.  A newer schema than a node
knows is refused too: that node is the one to upgrade.

Two nodes (or two C{db migrate}s) at once: each migration runs in one
transaction holding a transaction-level advisory lock, and reads the version
under it, so the second waits, then finds nothing to do.  PostgreSQL's DDL
is transactional: a failed step leaves the schema as it was.

A step is never edited once released: a change is a new step.
"""

# pg_advisory_xact_lock's key for schema changes (any bigint agreed by every
# node: "pymailer" in ASCII, truncated).
MIGRATION_LOCK = 0x706D61696C6572
# The same for writes to the accounts directory (L{pymailer.auth.directory_pg}).
DIRECTORY_LOCK = MIGRATION_LOCK + 1
# pg_advisory_xact_lock(LIMITS_LOCK_CLASS, hashtext(...)): the two-integer
# key space of the rate limit, lockout and connection counters
# (L{pymailer.limits_pg}), apart from the bigint keys above.
LIMITS_LOCK_CLASS = 0x706D6C

_STATES = "'incoming', 'active', 'deferred', 'hold', 'corrupt'"

# (version, what it brings, statements)
MIGRATIONS = [
    (1, "the mail queue and the accounts directory", [
        """CREATE TABLE schema_migrations (
            version integer PRIMARY KEY,
            description text NOT NULL,
            applied_at timestamptz NOT NULL DEFAULT now()
        )""",
        # -- the accounts directory (the SQLite one's schema version 4) --
        # Names collate as "C" (by code point), whatever the database's
        # locale: the lists come out in the order the SQLite directory and
        # Python give, and comparisons are exact.
        """CREATE TABLE domains (
            name text COLLATE "C" PRIMARY KEY,
            catch_all text NULL
        )""",
        """CREATE TABLE users (
            address text COLLATE "C" PRIMARY KEY,
            domain text COLLATE "C" NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
            password_hash text NOT NULL,
            admin boolean NOT NULL DEFAULT false,
            disabled boolean NOT NULL DEFAULT false,
            quota bigint NULL
        )""",
        """CREATE TABLE aliases (
            alias text COLLATE "C" NOT NULL,
            target text COLLATE "C" NOT NULL,
            domain text COLLATE "C" NOT NULL REFERENCES domains(name) ON DELETE CASCADE,
            PRIMARY KEY (alias, target)
        )""",
        "CREATE INDEX users_domain ON users(domain)",
        "CREATE INDEX aliases_domain ON aliases(domain)",
        # -- the mail queue (L{pymailer.queue.spool_pg}) --
        # envelope: Envelope.toJSON() as the file spool keeps it.
        # next_attempt: POSIX seconds, when a deferred message is due (for
        #   other states, when it entered its state), on the runners' clock.
        # claimed_by, lease_until: the claimer of an active message and when
        #   its claim lapses unless renewed, on the database's clock (one
        #   clock for every node).
        # back_state, back_next: where release() puts a claimed message.
        # claims, last_claim: every claim counted when it is made, before
        #   the delivery attempt (as mox records attempts).
        f"""CREATE TABLE queue (
            queue_id text COLLATE "C" PRIMARY KEY,
            state text NOT NULL CHECK (state IN ({_STATES})),
            envelope bytea NOT NULL,
            size bigint NOT NULL,
            next_attempt double precision NOT NULL,
            claimed_by text NULL,
            lease_until timestamptz NULL,
            back_state text NULL,
            back_next double precision NULL,
            claims integer NOT NULL DEFAULT 0,
            last_claim timestamptz NULL
        )""",
        "CREATE INDEX queue_due ON queue (state, next_attempt)",
        # The message data in chunks (bytea values are best kept well
        # under their 1 GB limit, and a chunk at a time in memory).
        """CREATE TABLE queue_data (
            queue_id text COLLATE "C" NOT NULL REFERENCES queue(queue_id) ON DELETE CASCADE,
            seq integer NOT NULL,
            chunk bytea NOT NULL,
            PRIMARY KEY (queue_id, seq)
        )""",
    ]),
    (2, "the message store", [
        # -- the message store (L{pymailer.store.postgresql}) --
        # In a schema of its own: its tables keep the SQLite store's names
        # (users, mailboxes, messages, ...; the SQL is shared with it) and
        # "users" here is not the accounts directory's.  Identifiers are
        # unquoted camelCase, folded to lower case by PostgreSQL alike in
        # these statements and in the shared queries.
        "CREATE SCHEMA mailstore",
        """CREATE TABLE mailstore.users (
            id bigserial PRIMARY KEY,
            name text COLLATE "C" NOT NULL UNIQUE,
            lastValidity bigint NOT NULL DEFAULT 0,
            foldersMade integer NOT NULL DEFAULT 0
        )""",
        # uidNext, highestModSeq: assigned by UPDATE ... RETURNING, which
        # holds the mailbox row's lock to the commit: two nodes never hand
        # out the same UID or MODSEQ.
        """CREATE TABLE mailstore.mailboxes (
            id bigserial PRIMARY KEY,
            userId bigint NOT NULL REFERENCES mailstore.users(id),
            name text COLLATE "C" NOT NULL,
            specialUse text,
            uidValidity bigint NOT NULL,
            uidNext bigint NOT NULL DEFAULT 1,
            highestModSeq bigint NOT NULL DEFAULT 1,
            firstRecent bigint NOT NULL DEFAULT 1,
            keywords text NOT NULL DEFAULT '[]',
            objectId text,
            UNIQUE (userId, name)
        )""",
        """CREATE TABLE mailstore.subscriptions (
            userId bigint NOT NULL REFERENCES mailstore.users(id),
            name text COLLATE "C" NOT NULL,
            PRIMARY KEY (userId, name)
        )""",
        # refs: messages naming the blob; at 0 it is freed, and its chunks
        # go with it once freedAt is older than a grace period (a reader
        # that opened it before the expunge finishes reading).
        """CREATE TABLE mailstore.blobs (
            id text COLLATE "C" PRIMARY KEY,
            refs integer NOT NULL,
            size integer NOT NULL,
            freedAt timestamptz
        )""",
        "CREATE INDEX blobsFreed ON mailstore.blobs (freedAt) WHERE freedAt IS NOT NULL",
        """CREATE TABLE mailstore.blob_chunks (
            blob text COLLATE "C" NOT NULL REFERENCES mailstore.blobs(id) ON DELETE CASCADE,
            seq integer NOT NULL,
            chunk bytea NOT NULL,
            PRIMARY KEY (blob, seq)
        )""",
        """CREATE TABLE mailstore.messages (
            mailboxId bigint NOT NULL REFERENCES mailstore.mailboxes(id),
            uid bigint NOT NULL,
            key text NOT NULL,
            modseq bigint NOT NULL,
            system text NOT NULL DEFAULT '',
            letters text COLLATE "C" NOT NULL DEFAULT '',
            internalDate double precision NOT NULL,
            size integer NOT NULL,
            blob text COLLATE "C" NOT NULL REFERENCES mailstore.blobs(id),
            uniqueKey text,
            saveDate double precision,
            PRIMARY KEY (mailboxId, uid)
        )""",
        """CREATE INDEX messagesUniqueKey ON mailstore.messages (mailboxId, uniqueKey)
            WHERE uniqueKey IS NOT NULL""",
        "CREATE INDEX messagesModSeq ON mailstore.messages (mailboxId, modseq)",
        "CREATE INDEX messagesBlob ON mailstore.messages (blob)",
        """CREATE TABLE mailstore.expunged (
            mailboxId bigint NOT NULL,
            uid bigint NOT NULL,
            modseq bigint NOT NULL,
            PRIMARY KEY (mailboxId, uid)
        )""",
        "CREATE INDEX expungedModSeq ON mailstore.expunged (mailboxId, modseq)",
        """CREATE TABLE mailstore.settings (
            name text PRIMARY KEY,
            value text NOT NULL
        )""",
        # One per blob, as in the SQLite store's upgrade step 2.
        """CREATE TABLE mailstore.summaries (
            blob text COLLATE "C" PRIMARY KEY,
            version integer NOT NULL,
            envelope bytea, bodystructure bytea, body bytea,
            sentDate bigint, subject text NOT NULL, baseSubject text NOT NULL,
            isReply integer NOT NULL,
            fromName text NOT NULL, fromMailbox text NOT NULL, fromHost text NOT NULL,
            toName text NOT NULL, toMailbox text NOT NULL, toHost text NOT NULL,
            ccName text NOT NULL, ccMailbox text NOT NULL, ccHost text NOT NULL,
            messageId text NOT NULL, inReplyTo text NOT NULL, refs text NOT NULL,
            attachments integer NOT NULL
        )""",
    ]),
    (3, "DKIM signing keys", [
        # -- DKIM keys (L{pymailer.pg.dkimkeys}): every node signs with
        # the same keys, the file layout's (data_dir/dkim/DOMAIN/
        # SELECTOR.TYPE.key) as rows.  domain: A-label form, as in d=.
        # pem: the key as the file held it (unencrypted PEM).
        """CREATE TABLE dkim_keys (
            domain text COLLATE "C" NOT NULL,
            selector text COLLATE "C" NOT NULL,
            key_type text NOT NULL CHECK (key_type IN ('rsa', 'ed25519')),
            pem bytea NOT NULL,
            created_at timestamptz NOT NULL DEFAULT now(),
            PRIMARY KEY (domain, selector, key_type)
        )""",
    ]),
    (4, "rate limits, login lockouts and connection counts", [
        # -- the counters of L{pymailer.limits_pg}, as the SQLite ones of
        # L{pymailer.limits}; times (at, until) are the callers' clock.
        """CREATE TABLE limit_buckets (
            bucket text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            tokens double precision NOT NULL,
            at double precision NOT NULL,
            PRIMARY KEY (bucket, key)
        )""",
        "CREATE INDEX limit_buckets_at ON limit_buckets (at)",
        """CREATE TABLE limit_failures (
            kind text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            at double precision NOT NULL
        )""",
        "CREATE INDEX limit_failures_key ON limit_failures (kind, key, at)",
        """CREATE TABLE limit_lockouts (
            kind text COLLATE "C" NOT NULL,
            key text COLLATE "C" NOT NULL,
            until double precision NOT NULL,
            PRIMARY KEY (kind, key)
        )""",
        # Open connections per client address, counted by each server
        # process (a "counter": a node, or one worker of a node) for its
        # own connections, and only while the counter is alive: it renews
        # alive_until (the database's clock) while it runs, so the counts of
        # a process that died stop counting once its lease lapses.
        """CREATE TABLE limit_counters (
            counter text COLLATE "C" PRIMARY KEY,
            alive_until timestamptz NOT NULL
        )""",
        """CREATE TABLE limit_connections (
            scope text COLLATE "C" NOT NULL,
            host text COLLATE "C" NOT NULL,
            counter text COLLATE "C" NOT NULL
                REFERENCES limit_counters(counter) ON DELETE CASCADE,
            open integer NOT NULL,
            PRIMARY KEY (scope, host, counter)
        )""",
        # Count a connection if there is room, in one statement: a client's
        # connection waits for this answer before its greeting, so it is
        # one round trip, not one per statement.  The advisory lock on
        # (scope, host), held to the commit, serialises the nodes counting
        # one address; other addresses go on in parallel.
        f"""CREATE FUNCTION limit_open_connection(
            p_scope text, p_host text, p_counter text, p_limit integer,
            p_lease double precision) RETURNS boolean
        LANGUAGE plpgsql AS $$
        DECLARE
            open_now bigint;
        BEGIN
            -- Counts, not mail: the commit need not wait for the WAL flush.
            PERFORM set_config('synchronous_commit', 'off', true);
            PERFORM pg_advisory_xact_lock({LIMITS_LOCK_CLASS},
                                          hashtext('connections' || chr(10) || p_scope
                                                   || chr(10) || p_host));
            SELECT coalesce(sum(c.open), 0) INTO open_now
                FROM limit_connections c JOIN limit_counters k ON k.counter = c.counter
                WHERE c.scope = p_scope AND c.host = p_host AND k.alive_until > now();
            IF open_now >= p_limit THEN
                RETURN false;
            END IF;
            -- Opening a connection is a sign of life too.
            INSERT INTO limit_counters (counter, alive_until)
                VALUES (p_counter, now() + make_interval(secs => p_lease))
                ON CONFLICT (counter) DO UPDATE SET alive_until = EXCLUDED.alive_until;
            INSERT INTO limit_connections (scope, host, counter, open)
                VALUES (p_scope, p_host, p_counter, 1)
                ON CONFLICT (scope, host, counter)
                DO UPDATE SET open = limit_connections.open + 1;
            RETURN true;
        END
        $$""",
    ]),
    (5, "queue: takeovers of lapsed claims counted, hold reasons", [
        # takeovers: claims in a row that took the message over from a
        #   claimer whose lease lapsed (it died mid-delivery, perhaps of
        #   this message), counted in the claim's transaction; back to 0
        #   when an attempt's outcome is recorded.  The runner backs off,
        #   then holds the message (L{pymailer.queue.runner}).
        # hold_reason: why the runner put it on hold, for the administrator.
        "ALTER TABLE queue ADD COLUMN takeovers integer NOT NULL DEFAULT 0",
        "ALTER TABLE queue ADD COLUMN hold_reason text NULL",
    ]),
    (6, "message store: an index of the \\Deleted messages for EXPUNGE", [
        # As the SQLite store's upgrade step 4, with the same predicate
        # (pymailer.store.sqlite.IS_DELETED, which the query repeats): an
        # EXPUNGE reads the \Deleted rows alone, not the whole mailbox.
        # A statement without parameters: psycopg sends its % as they are.
        "CREATE INDEX messagesDeleted ON mailstore.messages (mailboxId, system)"
        " WHERE system LIKE '%\\Deleted%' ESCAPE '!'",
    ]),
]

SCHEMA_VERSION = MIGRATIONS[-1][0]


class SchemaError(Exception):
    """The database cannot be used as it is: one line saying what to do."""


def schemaVersion(db):
    """The version of the schema in the database (0: none yet)."""
    row = db.execute("SELECT to_regclass('schema_migrations') IS NOT NULL").fetchone()
    if not row[0]:
        return 0
    return db.execute("SELECT coalesce(max(version), 0) FROM schema_migrations").fetchone()[0]


def checkEncoding(db):
    """
    @raise SchemaError: the database does not store UTF-8 (addresses and
        mailbox names may be UTF-8: RFC 6531, RFC 6855).
    """
    encoding = db.execute("SHOW server_encoding").fetchone()[0]
    if encoding.upper() not in ("UTF8", "UTF-8"):
        raise SchemaError(
            f"the PostgreSQL database's encoding is {encoding}; pymailer needs UTF8"
            " (CREATE DATABASE ... ENCODING 'UTF8' TEMPLATE template0)")


def checkSchema(db):
    """
    @raise SchemaError: the schema is older or newer than L{SCHEMA_VERSION},
        or the database is not UTF-8.
    """
    checkEncoding(db)
    version = schemaVersion(db)
    if version < SCHEMA_VERSION:
        what = "has no pymailer schema" if version == 0 else (
            f"has schema version {version}, this pymailer needs {SCHEMA_VERSION}")
        raise SchemaError(f"the PostgreSQL database {what}: run `pymailer db migrate`")
    if version > SCHEMA_VERSION:
        raise SchemaError(
            f"the PostgreSQL database has schema version {version}, newer than this"
            f" pymailer knows ({SCHEMA_VERSION}): upgrade pymailer on this node")


def migrate(db, migrations=None):
    """
    Bring the schema up to date, under the migration lock.

    @param db: a psycopg connection, not in a transaction.
    @param migrations: the steps (tests pass their own).
    @return: C{(versionBefore, versionAfter)}.
    @raise SchemaError: the database is newer than these steps.
    """
    migrations = MIGRATIONS if migrations is None else migrations
    latest = migrations[-1][0]
    checkEncoding(db)
    with db.transaction():
        db.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        before = schemaVersion(db)
        if before > latest:
            raise SchemaError(
                f"the PostgreSQL database has schema version {before}, newer than this"
                f" pymailer knows ({latest}): upgrade pymailer on this node")
        for version, description, statements in migrations:
            if version <= before:
                continue
            for statement in statements:
                db.execute(statement)
            db.execute("INSERT INTO schema_migrations (version, description) VALUES (%s, %s)",
                       (version, description))
    return before, latest

"""
The one place that picks the queue's backend from the configuration: the
server (L{pymailer.service}) and the C{pymailer queue} command get their
L{pymailer.interfaces.ISpool} here, and know nothing more about it.

The file spool under C{data_dir/queue}, or with C{[storage] backend =
"postgresql"} the queue every node shares in that database.
"""

from pymailer.config import POSTGRESQL
from pymailer.queue.model import QueueError


def openSpool(config, create=True):
    """
    @param create: make the spool if it does not exist.  The admin command
        passes C{False}: a queue made by the wrong user (or under the wrong
        config) would break the server.
    @return: an L{ISpool}.
    @raise QueueError: C{create} is false and there is no spool.
    @raise pymailer.pg.schema.SchemaError: PostgreSQL cannot be used as it is.
    """
    if config.storage.backend == POSTGRESQL:
        from pymailer.pg.pool import poolFor
        from pymailer.queue.spool_pg import PostgreSQLSpool

        return PostgreSQLSpool(poolFor(config.storage), lease=config.storage.queue_lease)
    from pymailer.queue.spool_files import Spool

    root = config.data_dir / "queue"
    if not create and not root.is_dir():
        raise QueueError(f"no mail queue at {root} (has the server run with"
                         " this configuration?)")
    return Spool(root)

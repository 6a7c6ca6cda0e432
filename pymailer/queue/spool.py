"""
The file spool's old module name: L{pymailer.queue.spool_files} (which
re-exports L{pymailer.queue.model}'s names).  New code talks to
L{pymailer.interfaces.ISpool} and L{pymailer.queue.model}.
"""

from pymailer.queue.spool_files import *  # noqa: F401,F403

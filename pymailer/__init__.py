"""
pymailer: a self-hostable mail server built on Twisted.

One message's path: smtp (receive) -> policy -> queue (spool, runner) ->
delivery (router, local agent) -> store -> imap/pop3.
"""

__version__ = "0.1.0"

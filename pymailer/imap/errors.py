"""
The failures IMAP commands raise for the dispatcher to answer (besides
L{pymailer.imap.parser.ParseError}, answered C{BAD}); here rather than in
the server module so that the modules of single extensions can raise them.
"""


class CommandFailed(Exception):
    """Answered with C{NO} and this text."""

"""
POP3 (RFC 1939, 2449, 2595, 5034) over the same store as IMAP.

  - L{pymailer.pop3.server}: the protocol and its factory, and the builders
    the composition root registers (C{buildPOP3}, C{buildMaildrops});
  - L{pymailer.pop3.maildrop}: C{IMailboxPOP3} over L{IMailStore}: the
    session snapshot, the cross-process lock, UIDL, delete-at-QUIT;
  - L{pymailer.pop3.stream}: RETR/TOP streamed in constant memory with
    dot-stuffing that holds across chunk boundaries.
"""

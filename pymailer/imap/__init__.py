"""
The IMAP4rev1 server (RFC 3501) over the mail store.

  - L{server}: the protocol, a subclass of Twisted's C{IMAP4Server};
  - L{parser}: the command tokenizer and response formatting;
  - L{selected}: the selected mailbox as the client was told it, and its
    untagged updates;
  - L{fetch}: FETCH items and responses;
  - L{message}: MIME structure, BODYSTRUCTURE, ENVELOPE and body sections;
  - L{search}: SEARCH keys;
  - L{summary}: what IMAP needs of a message without opening it (ENVELOPE,
    BODYSTRUCTURE, SORT/THREAD fields), computed when it is stored;
  - L{sort}, L{thread}: SORT, ESORT and THREAD over those summaries;
  - L{listing}: LIST and LSUB wildcards and hierarchy;
  - L{objectid}: OBJECTID (RFC 8474) and SAVEDATE (RFC 8514) items;
  - L{notify}: NOTIFY (RFC 5465), built on the store's change events;
  - L{account}: the C{IAccountIMAP} avatar and the change notifier;
  - L{utf7}: IMAP's modified UTF-7 for mailbox names (RFC 3501 5.1.3).
"""

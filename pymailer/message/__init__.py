"""
A stored message read without a protocol: its MIME structure
(L{pymailer.message.mime}) and the summary the stores keep per content
(L{pymailer.message.summary}).  The stores and the protocols (IMAP FETCH,
SORT, THREAD, SEARCH; the webmail) import these; nothing here imports a
protocol.
"""

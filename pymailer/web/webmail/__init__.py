"""
The webmail under C{/webmail/} (issue 17): every user reads and organises
their mail in a browser, with the login and sessions of the web pages.

 - L{mailbox}: what the pages read and change, through
   L{pymailer.interfaces.IMailStore} and L{pymailer.interfaces.IMailbox}
   only (blocking: run in the thread pool);
 - L{content}: a message's headers, body and attachments, and the HTML
   sanitiser (nh3, an allowlist);
 - L{app}: the routes and the pages;
 - L{compose}: writing (compose, reply, forward, drafts), with
   L{outgoing} (the MIME built) and L{sending} (Drafts, Sent, and the
   hand-over to the queue through L{pymailer.smtp.submission}).
"""

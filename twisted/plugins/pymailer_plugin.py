"""
The twistd plugin: names the module that builds the service, and nothing more,
so that nothing of pymailer loads until `twistd pymailer` runs.
"""

from twisted.application.service import ServiceMaker

pymailer = ServiceMaker(
    "pymailer",
    "pymailer.tap",
    "A mail server: SMTP, local delivery, IMAP and POP3.",
    "pymailer",
)

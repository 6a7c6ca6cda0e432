"""
The learning spam filter: a per-user Bayesian classifier (L{tokens},
L{bayes}), its state (L{db}), and training from the user's own actions
(L{training}).  The policy piece that uses it is
L{pymailer.policy.classifier}; nothing in here knows SMTP or IMAP.
"""

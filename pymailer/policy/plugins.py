"""
Finding policy pieces by name: ours first, then Twisted plugins.

Our own pieces are named here and imported only when enabled.  A third
party ships an L{IPolicyFactory} provider in a C{twisted/plugins/} file
anywhere on C{sys.path}; C{twisted.plugin.getPlugins} finds it, so enabling
it is one name in C{[policy] checks}.
"""

import importlib

from twisted.plugin import getPlugins

from pymailer.interfaces import IPolicy, IPolicyFactory

BUILTIN = {
    "ratelimit": "pymailer.policy.ratelimit:RateLimitFactory",
    "spf": "pymailer.policy.pieces:SPFFactory",
    "dkim": "pymailer.policy.pieces:DKIMFactory",
    "arc": "pymailer.policy.pieces:ARCFactory",
    "dmarc": "pymailer.policy.pieces:DMARCFactory",
    "dnsbl": "pymailer.policy.dnsbl:DNSBLFactory",
    "greylist": "pymailer.policy.greylist:GreylistFactory",
    "rules": "pymailer.policy.rules:RulesFactory",
    "classifier": "pymailer.policy.classifier:ClassifierFactory",
    "rspamd": "pymailer.policy.rspamd:RspamdFactory",
    "clamav": "pymailer.policy.clamav:ClamAVFactory",
}


class UnknownPolicy(Exception):
    pass


def findFactory(name):
    target = BUILTIN.get(name)
    if target is not None:
        module, _, attr = target.partition(":")
        return getattr(importlib.import_module(module), attr)()
    import twisted.plugins
    for factory in getPlugins(IPolicyFactory, twisted.plugins):
        if factory.name == name:
            return factory
    raise UnknownPolicy(
        f"no policy piece named {name!r} (ours: {', '.join(sorted(BUILTIN))};"
        " plugins: an IPolicyFactory in a twisted/plugins/ file on sys.path)")


def checkPolicyNames(config):
    """
    @raise UnknownPolicy: naming the config and the first C{[policy] checks}
        entry no piece answers to.
    """
    for name in config.policy.checks:
        try:
            findFactory(name)
        except UnknownPolicy as e:
            raise UnknownPolicy(f"{config.source or 'embedded default'}: policy.checks: {e}")


def buildPieces(names, context, options):
    """
    @param options: C{{name: dict}} from the C{[policy.NAME]} tables.
    @return: the L{IPolicy} pieces, in the order of C{names}.
    """
    pieces = []
    for name in names:
        piece = findFactory(name).build(context, options.get(name, {}))
        if not IPolicy.providedBy(piece):
            raise UnknownPolicy(f"policy plugin {name!r} built {piece!r}, not an IPolicy")
        pieces.append(piece)
    return pieces

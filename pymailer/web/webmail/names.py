"""
Folder names as the webmail shows and takes them: always text a page can
carry.

A Maildir folder whose directory name is not valid UTF-8 (made by another
program, or copied in) reaches us with each octet that does not decode as
a lone surrogate (Python's surrogateescape, PEP 383).  No page can be
encoded with one: every webmail page listing the user's folders answered
500.  Such a name is shown, linked and posted back here as its octets
escaped, C{Entw\\xfcrfe} (Python's backslashreplace form, which no valid
name decodes to unless it is spelt so: an existing folder of that very
spelling is found first), and a name coming back from a page in that form
is looked up among the user's folders, so the folder can be opened, its
mail moved, and renamed to a valid name.
"""

# Surrogateescape's range: an undecodable octet 0xHH is U+DCHH.
_ESCAPED_OCTETS = range(0xDC80, 0xDD00)


def _shown(char):
    code = ord(char)
    if code in _ESCAPED_OCTETS:
        return f"\\x{code - 0xDC00:02x}"
    if 0xD800 <= code <= 0xDFFF:
        return f"\\u{code:04x}"
    return char


def webName(name):
    """C{name} as pages show it: itself, unless it holds lone surrogates."""
    if all(not 0xD800 <= ord(c) <= 0xDFFF for c in name):
        return name
    return "".join(_shown(c) for c in name)


class WebNames:
    """
    The store as the webmail uses it (the L{pymailer.interfaces.IMailStore}
    methods below), every folder name it gives out a L{webName} and every
    one it takes back looked up (L{storeName}).  A mailbox's own C{name}
    stays the store's: pages show it through L{webName}.
    """

    def __init__(self, store):
        self._store = store

    def __getattr__(self, attribute):
        # What takes or gives no folder name goes to the store as it is.
        return getattr(self._store, attribute)

    def storeName(self, user, name):
        """The store's name of C{user}'s folder shown as C{name}."""
        if "\\" not in name:  # no escaped octet: the name itself
            return name
        names = self._store.listMailboxes(user)
        if name in names:
            return name
        return next((real for real in names if webName(real) == name), name)

    def listMailboxes(self, user):
        return [webName(name) for name in self._store.listMailboxes(user)]

    def mailboxCounts(self, user):
        return {webName(name): counts
                for name, counts in self._store.mailboxCounts(user).items()}

    def specialUses(self, user):
        return {webName(name): uses for name, uses in self._store.specialUses(user).items()}

    def mailbox(self, user, name):
        return self._store.mailbox(user, self.storeName(user, name))

    def deleteMailbox(self, user, name):
        return self._store.deleteMailbox(user, self.storeName(user, name))

    def renameMailbox(self, user, old, new):
        real = self.storeName(user, old)
        try:
            return self._store.renameMailbox(user, real, new)
        except KeyError as e:
            if e.args and e.args[0] == real:
                raise KeyError(old) from None  # the name the caller knows
            raise

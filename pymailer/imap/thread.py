"""
THREAD (RFC 5256 4): C{THREAD=ORDEREDSUBJECT} and C{THREAD=REFERENCES}
(RFC 5256 4, the steps numbered as there), over the messages' summaries
(L{pymailer.message.summary}), never by parsing the messages per command.

Trust: Message-ID, In-Reply-To and References are whatever senders wrote:
loops, duplicates, thousands of ids, chains thousands deep.  Nothing here
recurses (every walk keeps its own stack), a link that would close a loop
is not made, and the work runs in the thread pool, not on the reactor.
"""

from pymailer.imap.parser import ParseError, isAtom
from pymailer.imap.sort import fold, matchedWithSummaries, parseCharset, sentDate

ALGORITHMS = (b"ORDEREDSUBJECT", b"REFERENCES")


class _Message:
    """What threading needs of one message."""

    __slots__ = ("number", "seq", "date", "summary")

    def __init__(self, number, seq, date, summary):
        self.number, self.seq, self.date, self.summary = number, seq, date, summary


class _Node:
    """A container (RFC 5256 4: a message, or a dummy for one not here)."""

    __slots__ = ("message", "parent", "children")

    def __init__(self, message=None):
        self.message = message
        self.parent = None
        # A shared empty tuple until the first child: most messages have
        # none, and every list is one more object for the collector.
        self.children = ()

    def adopt(self, child):
        child.parent = self
        if not self.children:
            self.children = []
        self.children.append(child)

    def orphan(self):
        if self.parent is not None:
            self.parent.children.remove(self)
            self.parent = None

    def sortKey(self):
        """Sent date, then sequence number; a dummy's is its first child's."""
        node = self
        while node.message is None and node.children:
            node = node.children[0]
        message = node.message
        return (message.date, message.seq) if message is not None else (0, 0)


def _isAncestor(node, of):
    """Whether C{node} is C{of} or above it (walking up, no recursion)."""
    while of is not None:
        if of is node:
            return True
        of = of.parent
    return False


def _wouldLoop(parent, child):
    # A childless node cannot be above anything: the walk is skipped for
    # the usual case of a message seen first.
    return child is parent or (child.children and _isAncestor(child, parent))


def references(messages):
    """
    RFC 5256 4, REFERENCES: C{messages} (L{_Message}s in sequence order)
    as a list of root L{_Node}s, each a thread, sorted.
    """
    # (1) Link messages by their references.
    table = {}

    def container(messageId):
        node = table.get(messageId)
        if node is None:
            node = table[messageId] = _Node()
        return node

    for message in messages:
        s = message.summary
        messageId = s.messageId
        # (1A) a missing or duplicate Message-ID gets a unique one.
        if not messageId or (messageId in table and table[messageId].message is not None):
            messageId = (message.seq,)  # a tuple never equals a str id
        node = container(messageId)
        node.message = message
        refs = s.references or ((s.inReplyTo,) if s.inReplyTo else ())
        previous = None
        for ref in refs:
            current = container(ref)
            # (1A) link each to the next, unless already linked or a loop.
            if previous is not None and current.parent is None \
                    and not _wouldLoop(previous, current):
                previous.adopt(current)
            previous = current
        # (1B) the last reference is this message's parent, replacing a
        # parent guessed from other messages' references; none if no
        # references, and none that would make a loop.
        if previous is not None and _wouldLoop(previous, node):
            continue
        node.orphan()
        if previous is not None:
            previous.adopt(node)
    # (2) The root set.
    roots = [node for node in table.values() if node.parent is None]
    # (3) Prune dummies.
    roots = _prune(roots)
    # (4) Sort the roots by date (a dummy by its first child's, its
    # children sorted first).
    for node in roots:
        if node.message is None:
            node.children.sort(key=_Node.sortKey)
    roots.sort(key=_Node.sortKey)
    # (5) Gather roots by base subject.
    roots = _gatherBySubject(roots)
    # (6) Sort every set of siblings, the deepest first.
    _sortTree(roots)
    return roots


def _prune(roots):
    """RFC 5256 4 (3): no dummy without children; no dummy below the roots."""
    out = []
    pending = list(reversed(roots))
    while pending:
        node = pending.pop()
        if node.message is None:
            if not node.children:
                continue  # (3A)
            if len(node.children) == 1:
                # (3B) promoted to the root set only when it is one child.
                child = node.children[0]
                child.parent = None
                pending.append(child)
                continue
        out.append(node)
    stack = list(out)
    while stack:
        node = stack.pop()
        if all(child.message is not None for child in node.children):
            stack.extend(node.children)  # the usual case: nothing to prune
            continue
        kept = []
        children = list(reversed(node.children))
        while children:
            child = children.pop()
            if child.message is None:
                # (3A) dropped, or (3B) its children take its place here.
                for grandchild in child.children:
                    grandchild.parent = node
                children.extend(reversed(child.children))
                continue
            kept.append(child)
        node.children = kept
        stack.extend(kept)
    return out


def _subject(node):
    """The base subject of a root: a dummy's is its first child's."""
    message = node.message or node.children[0].message
    return fold(message.summary.baseSubject) if message is not None else b""


def _isReply(node):
    return node.message is not None and node.message.summary.isReply


def _gatherBySubject(roots):
    """RFC 5256 4 (5): roots of the same base subject become one thread."""
    table = {}
    for node in roots:  # (5B, 5C)
        subject = _subject(node)
        if not subject:
            continue
        old = table.get(subject)
        if old is None or (node.message is None and old.message is not None) or (
                _isReply(old) and node.message is not None and not _isReply(node)):
            table[subject] = node
    merged, replaced = set(), {}
    for node in roots:  # (5D)
        if node.parent is not None:
            continue  # put under a new dummy earlier in this loop
        subject = _subject(node)
        if not subject:
            continue
        old = table[subject]
        if old is node:
            continue
        merged.add(node)
        if old.message is None and node.message is None:
            for child in node.children:
                old.adopt(child)
            node.children = ()
        elif old.message is None:
            old.adopt(node)
        elif _isReply(node) and not _isReply(old):
            old.adopt(node)
        else:
            # Both replies, or neither: siblings under a new dummy, in
            # the table (and in the root set) in place of the old one.
            dummy = _Node()
            replaced[old] = dummy
            dummy.adopt(old)
            dummy.adopt(node)
            table[subject] = dummy
    return [replaced.get(node, node) for node in roots if node not in merged]


def _sortTree(roots):
    """RFC 5256 4 (6): each set of siblings by date, children first."""
    order, stack = [], list(roots)
    while stack:
        node = stack.pop()
        order.append(node)
        stack.extend(node.children)
    for node in reversed(order):  # every node after its descendants
        if len(node.children) > 1:
            node.children.sort(key=_Node.sortKey)
    roots.sort(key=_Node.sortKey)


def orderedSubject(messages):
    """
    RFC 5256 4, ORDEREDSUBJECT: by base subject then date; each base
    subject one thread, its first message the parent of the others;
    threads by the date of their first message.
    """
    groups = {}
    for message in sorted(messages, key=lambda m: (m.date, m.seq)):
        subject = fold(message.summary.baseSubject)
        root = groups.get(subject)
        if root is None:
            groups[subject] = _Node(message)
        else:
            root.adopt(_Node(message))
    return sorted(groups.values(), key=_Node.sortKey)


def formatThreads(roots):
    """
    The C{* THREAD} data (RFC 5256 5, thread-list), built with a stack:
    a node with one child continues its chain, one with several opens a
    parenthesised list per child; a dummy shows only its children.
    """
    out = []
    for root in roots:
        out.append(b"(")
        stack = [root]
        while stack:
            item = stack.pop()
            if isinstance(item, bytes):
                out.append(item)
                continue
            parts = []
            children = item.children
            if item.message is not None:
                parts.append(b"%d" % item.message.number)
                if children:
                    parts.append(b" ")
            if len(children) == 1:
                parts.append(children[0])
            else:
                for child in children:
                    parts += [b"(", child, b")"]
            stack.extend(reversed(parts))
        out.append(b")")
    return b"".join(out)


def command(server, tag, args, uid):
    """C{[UID] THREAD algorithm charset search-key...}: C{* THREAD ...}."""
    args = list(args)
    if len(args) < 3:
        raise ParseError("THREAD needs an algorithm, a charset and search keys")
    algorithm = next((a for a in ALGORITHMS if isAtom(args[0], a)), None)
    if algorithm is None:
        raise ParseError("unknown threading algorithm")
    charset = parseCharset(args[1])

    def work(result):
        _, matched = result
        numbers = matched.uids if uid else matched.seqs
        messages = [_Message(n, seq, sentDate(info, summary), summary) for n, seq, info, summary
                    in zip(numbers, matched.seqs, matched.infos, matched.summaries)]
        threads = (references if algorithm == b"REFERENCES" else orderedSubject)(messages)
        return formatThreads(threads)

    def answer(data):
        server.sendLine(b"* THREAD " + data if data else b"* THREAD")

    # Threading a large mailbox takes a while: in the pool, too.
    d = matchedWithSummaries(server, charset, args[2:], server.searchResult)
    return d.addCallback(lambda result: server.account.run(work, result)).addCallback(answer)

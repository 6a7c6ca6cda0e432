"""
THREAD (RFC 5256 4): ORDEREDSUBJECT and REFERENCES, through the protocol
for the common shapes (RFC 5256 5's response syntax), and on the
algorithm directly for the shapes senders get wrong: missing parents,
duplicate ids, reply loops, thousands of ids, chains thousands deep.
"""

import time

import pytest

from imapharness import Client
from pymailer.imap import thread
from pymailer.message.summary import summarize
from pymailer.store.content import BytesContent
from pymailer.store.memory import MemoryStore

BASE = summarize(BytesContent(b"Subject: x\r\n\r\n"))


def message(seq, subject="x", messageId="", references=(), inReplyTo="", date=None):
    from pymailer.message.summary import baseSubject
    base, reply = baseSubject(subject)
    s = BASE._replace(subject=subject, baseSubject=base, isReply=reply,
                            messageId=messageId, references=tuple(references),
                            inReplyTo=inReplyTo)
    return thread._Message(seq, seq, seq if date is None else date, s)


def threads(messages, algorithm=thread.references):
    return thread.formatThreads(algorithm(messages)).decode()


def mail(subject, messageId, references="", inReplyTo="", date="1 Dec 2025 10:00:00 +0000"):
    head = f"Subject: {subject}\r\nMessage-ID: <{messageId}>\r\nDate: {date}\r\n"
    if references:
        head += "References: " + " ".join(f"<{r}>" for r in references.split()) + "\r\n"
    if inReplyTo:
        head += f"In-Reply-To: <{inReplyTo}>\r\n"
    return head.encode() + b"\r\nbody\r\n"


@pytest.fixture
def client():
    c = Client(store=MemoryStore(), secure=True)
    bodies = [
        mail("meeting", "a", date="1 Dec 2025 10:00:00 +0000"),                       # 1
        mail("Re: meeting", "b", "a", date="1 Dec 2025 11:00:00 +0000"),              # 2
        mail("other", "c", date="1 Dec 2025 09:00:00 +0000"),                         # 3
        mail("Re: meeting", "d", "a b", date="1 Dec 2025 12:00:00 +0000"),            # 4
        mail("Re: meeting", "e", inReplyTo="a", date="1 Dec 2025 13:00:00 +0000"),    # 5
        mail("Re: other", "f", date="1 Dec 2025 14:00:00 +0000"),                     # 6
    ]
    for body in bodies:
        c.deliver(body)
    c.login()
    c.send(b"s SELECT INBOX\r\n")
    return c


def test_thread_references_over_the_protocol(client):
    """
    A client showing conversations gets 1 with replies 2 (replied to by 4)
    and 5; 'Re: other' without references joins 'other' by subject.
    """
    out = client.send(b"t THREAD REFERENCES UTF-8 ALL\r\n")
    assert out == b"* THREAD (3 6)(1 (2 4)(5))\r\nt OK THREAD completed\r\n"


def test_uid_thread_and_search_keys(client):
    """UID THREAD answers UIDs; the search keys pick the messages threaded."""
    client.send(b"e STORE 1 +FLAGS (\\Deleted)\r\n")
    client.send(b"x EXPUNGE\r\n")
    out = client.send(b"t UID THREAD REFERENCES UTF-8 SUBJECT meeting\r\n")
    # 1 is gone: 2's parent is a dummy; 2, 4 (under 2) and 5 share "meeting".
    assert out == b"* THREAD ((2 4)(5))\r\nt OK THREAD completed\r\n"
    out = client.send(b"t THREAD REFERENCES UTF-8 SUBJECT nothing\r\n")
    assert out == b"* THREAD\r\nt OK THREAD completed\r\n"


def test_ordered_subject_over_the_protocol(client):
    """ORDEREDSUBJECT: one thread per base subject, its first message the parent of the rest."""
    out = client.send(b"t THREAD ORDEREDSUBJECT UTF-8 ALL\r\n")
    assert out == b"* THREAD (3 6)(1 (2)(4)(5))\r\nt OK THREAD completed\r\n"


def test_thread_errors(client):
    """An unknown algorithm is BAD; an unknown charset NO [BADCHARSET]."""
    assert b"t BAD" in client.send(b"t THREAD JWZ UTF-8 ALL\r\n")
    assert b"u NO [BADCHARSET" in client.send(b"u THREAD REFERENCES X-UNKNOWN ALL\r\n")
    assert b"v BAD" in client.send(b"v THREAD REFERENCES UTF-8\r\n")


# -- the algorithm on hand-made messages ----------------------------------------

def test_missing_parent_between():
    """A reply whose parent is missing still hangs under the grandparent (the dummy is pruned)."""
    assert threads([message(1, messageId="a"),
                    message(2, "Re: x", "c", references=["a", "b"])]) == "(1 2)"


def test_siblings_of_a_missing_root():
    """Two replies to a message not here show as siblings under an empty parent: ((1)(2))."""
    assert threads([message(1, "p", "b", ["a"]), message(2, "q", "c", ["a"])]) == "((1)(2))"


def test_single_child_of_missing_root_is_promoted():
    """One reply to a message not here is a thread of its own, with no empty parent."""
    assert threads([message(1, "p", "b", ["a"]), message(2, "q", "c", ["b"])]) == "(1 2)"


def test_reply_loop():
    """Two messages naming each other as parent give one thread, not a hang or a lost message."""
    out = threads([message(1, "p", "a", ["b"]), message(2, "q", "b", ["a"])])
    assert out in ("(1 2)", "(2 1)")


def test_references_loop_inside_one_header():
    """A References field that loops (a b a b ...) threads without a cycle."""
    refs = ["a", "b"] * 500
    out = threads([message(1, "p", "a"), message(2, "q", "b"),
                   message(3, "r", "c", refs)])
    assert sorted(out.replace("(", " ").replace(")", " ").split()) == ["1", "2", "3"]


def test_duplicate_message_ids():
    """A second message with the same Message-ID is kept as a message of its own."""
    out = threads([message(1, "p", "a"), message(2, "q", "a"), message(3, "Re: p", "c", ["a"])])
    assert sorted(out.replace("(", " ").replace(")", " ").split()) == ["1", "2", "3"]
    assert out.startswith("(1 3)")


def test_subject_gathering():
    """Messages without references join by base subject: a reply under the original, equals as siblings."""
    assert threads([message(1, "hello"), message(2, "Re: hello")]) == "(1 2)"
    assert threads([message(1, "hello"), message(2, "hello")]) == "((1)(2))"
    assert threads([message(1, "Re: hi"), message(2, "hi")]) == "(2 1)"


def test_siblings_sorted_by_date_then_sequence():
    """Replies show oldest first; equal dates in sequence order."""
    msgs = [message(1, messageId="a", date=5), message(2, "Re: x", "b", ["a"], date=9),
            message(3, "Re: x", "c", ["a"], date=7), message(4, "Re: x", "d", ["a"], date=7)]
    assert threads(msgs) == "(1 (3)(4)(2))"


def test_ordered_subject_units():
    """ORDEREDSUBJECT sorts threads by their first message's date."""
    msgs = [message(1, "b", date=3), message(2, "a", date=2), message(3, "Re: b", date=1)]
    assert threads(msgs, thread.orderedSubject) == "(3 1)(2)"


# -- hostile --------------------------------------------------------------------

def test_deep_chain_does_not_recurse():
    """
    A conversation 20,000 replies deep threads and formats without hitting
    the recursion limit, and in reasonable time.
    """
    n = 20000
    msgs = [message(1, messageId="m1")] + [
        message(i, "Re: x", f"m{i}", inReplyTo=f"m{i - 1}") for i in range(2, n + 1)]
    started = time.perf_counter()
    out = threads(msgs)
    assert out == "(" + " ".join(str(i) for i in range(1, n + 1)) + ")"
    assert time.perf_counter() - started < 10


def test_deep_chain_delivered_in_reverse():
    """Children arriving before their parents (reverse order) still make one chain."""
    n = 3000
    # Each names its last 50 ancestors, as References does.
    msgs = [message(j, "Re: x", f"m{j}", [f"m{k}" for k in range(max(1, j - 50), j)])
            for j in range(n, 0, -1)]
    started = time.perf_counter()
    out = threads(msgs)
    assert out == "(" + " ".join(str(i) for i in range(1, n + 1)) + ")"
    assert time.perf_counter() - started < 10


def test_thousands_of_references():
    """A message naming 5,000 ancestors, most missing, threads under the one that is here."""
    refs = [f"gone{i}" for i in range(5000)] + ["root"]
    assert threads([message(1, "p", "root"), message(2, "Re: p", "x", refs)]) == "(1 2)"


def test_work_runs_in_the_thread_pool(client, monkeypatch):
    """
    If this fails, a THREAD or SORT on a large mailbox runs on the reactor
    thread and every other client of the server waits for it.
    """
    import imapharness
    names = []
    real = imapharness.InlineAccount.run

    def recording(self, function, *args, **kwargs):
        names.append(function.__qualname__)
        return real(self, function, *args, **kwargs)

    monkeypatch.setattr(imapharness.InlineAccount, "run", recording)
    client.send(b"t THREAD REFERENCES UTF-8 ALL\r\n")
    assert "command.<locals>.work" in names  # threading
    assert "matchedWithSummaries.<locals>.work" in names  # search + summaries
    names.clear()
    client.send(b"s SORT (DATE) UTF-8 ALL\r\n")
    assert names == ["matchedWithSummaries.<locals>.work"]

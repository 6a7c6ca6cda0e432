"""
What a web session costs in SQLite (pymailer/web/sessions.py), per call,
with 10,000 sessions in the table (the most kept): a login (insert), a
request within the touch interval (a read), and one past it (a read and
a write).  Each call runs in the thread pool in the server.

    PYTHONPATH=. python bench/web_sessions.py
"""

import os
import tempfile
import time

from pymailer.web.sessions import MAX_SESSIONS, TOUCH_INTERVAL, SessionDB, hashId


def perCall(f, items):
    start = time.perf_counter()
    for item in items:
        f(item)
    return (time.perf_counter() - start) / len(items) * 1e6


def main():
    db = SessionDB(os.path.join(tempfile.mkdtemp(), "websessions.sqlite"))
    now, idle = 1000.0, 1800.0
    ids = [hashId(f"session{i}") for i in range(MAX_SESSIONS)]
    insert = perCall(lambda h: db.insert(h, "csrf", "a@example.org", now + idle, now,
                                         MAX_SESSIONS), ids)
    read = perCall(lambda h: db.lookup(h, now, now + idle, now + idle - TOUCH_INTERVAL), ids)
    later = now + 2 * TOUCH_INTERVAL
    touch = perCall(lambda h: db.lookup(h, later, later + idle,
                                        later + idle - TOUCH_INTERVAL), ids)
    print(f"{MAX_SESSIONS} sessions: login {insert:.0f} us, request {read:.0f} us,"
          f" request that moves the expiry {touch:.0f} us")


if __name__ == "__main__":
    main()

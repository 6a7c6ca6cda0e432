"""
Delivery latency under load, for bench/smtp_side_by_side.sh: while the
load runs, send one probe message every INTERVAL seconds to RECIPIENT and
time each from its 250 to the moment it is in the recipient's INBOX (read
through the store, as the admin command opens it).

    smtp_probe.py CONFIG PORT RECIPIENT STOPFILE [INTERVAL]

Runs until STOPFILE exists, then waits for the probes still in flight (at
most 30 s) and prints one line:
``probe sent=N seen=N p50_ms=X p90_ms=X p99_ms=X max_ms=Y ahead_of_max=Q``,
where Q is the number of messages in the queue (new or being delivered)
when the slowest probe was accepted: the backlog it waited behind (the
queue is delivered oldest first).
"""

import smtplib
import sys
import time

from pymailer import config as configModule
from pymailer.store import openStore


def main(configPath, port, recipient, stopFile, interval=0.5):
    import os

    config = configModule.load(configPath)
    store = openStore(config)
    queueDir = config.data_dir / "queue"

    def queued():
        try:
            return sum(len(os.listdir(queueDir / state)) for state in ("incoming", "active"))
        except OSError:
            return 0

    def inboxCount():
        try:
            return len(store.mailbox(recipient, "INBOX").messages())
        except KeyError:
            return 0

    base = inboxCount()
    sent = []  # the perf_counter of each probe's 250
    seen = []  # latency of each probe, in order (delivery is FIFO enough)
    ahead = []  # messages queued when each probe was accepted
    nextSend = time.perf_counter()
    deadline = None
    while True:
        now = time.perf_counter()
        if deadline is None and os.path.exists(stopFile):
            deadline = now + 30
        if deadline is None and now >= nextSend:
            nextSend = now + interval
            try:
                with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
                    client.sendmail("probe@remote.test", [recipient],
                                    f"Subject: probe {len(sent)}\r\n\r\nprobe\r\n")
                sent.append(time.perf_counter())
                ahead.append(queued())
            except (OSError, smtplib.SMTPException) as e:
                print(f"probe error {e}", file=sys.stderr)
        arrived = inboxCount() - base
        now = time.perf_counter()
        while len(seen) < min(arrived, len(sent)):
            seen.append(now - sent[len(seen)])
        if deadline is not None and (len(seen) >= len(sent) or now > deadline):
            break
        time.sleep(0.02)
    ordered = sorted(seen)

    def percentile(p):
        return ordered[min(len(ordered) - 1, len(ordered) * p // 100)] * 1000 \
            if ordered else float("nan")
    print(f"probe sent={len(sent)} seen={len(seen)} p50_ms={percentile(50):.0f} "
          f"p90_ms={percentile(90):.0f} p99_ms={percentile(99):.0f} "
          f"max_ms={percentile(100):.0f} "
          f"ahead_of_max={ahead[seen.index(max(seen))] if seen else 0}")


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4],
         *(float(a) for a in sys.argv[5:6]))

"""
What the benchmarks share: the test message, the client threads and their
progress line, percentiles, and the head and tail of the summary they print.
"""

import os
import platform
import threading
import time

MB = 1024 * 1024
_LINE = b"The quick brown fox jumps over the lazy dog 0123456789 abcdefghij.\r\n"


def makeMessage(sender, recipient, client, n, size):
    """
    @return: C{(token, message)}: a CRLF-ended message of about C{size}
        octets whose Message-ID is the unique C{token}.
    """
    token = f"bench.{client}.{n}.{time.time_ns()}"
    head = (
        f"From: <{sender}>\r\n"
        f"To: <{recipient}>\r\n"
        f"Subject: bench {client}/{n}\r\n"
        f"Message-ID: <{token}>\r\n"
        "\r\n"
    ).encode()
    return token, head + _LINE * max(1, (size - len(head)) // len(_LINE))


def percentile(sortedValues, q):
    if not sortedValues:
        return float("nan")
    return sortedValues[min(len(sortedValues) - 1,
                            max(0, round(q * (len(sortedValues) - 1))))]


def latencyLine(label, sortedSeconds, digits=2):
    """C{label : p50 .. ms, p99 .. ms, max .. ms}."""
    def ms(value):
        return f"{value * 1000:.{digits}f} ms"

    top = sortedSeconds[-1] if sortedSeconds else float("nan")
    return (f"{label:<24}: p50 {ms(percentile(sortedSeconds, 0.50))},"
            f" p99 {ms(percentile(sortedSeconds, 0.99))}, max {ms(top)}")


def cpuSeconds(pid):
    """utime + stime of C{pid} (all its threads), in seconds."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def resetPeakRSS(pid):
    """Linux: writing 5 to clear_refs resets VmHWM to the current RSS."""
    try:
        with open(f"/proc/{pid}/clear_refs", "w") as f:
            f.write("5")
        return True
    except OSError:
        return False


def summaryHead(title, args, total, accepted, refused, errors, wall, wallLabel):
    return [
        "",
        f"==== {title} " + "=" * max(4, 60 - len(title)),
        f"machine                 : {os.cpu_count()} CPUs, Python"
        f" {platform.python_version()}, {platform.system()} {platform.release()}",
        f"load                    : {args.clients} clients x {args.messages} messages"
        f" x {args.size} B = {total} messages",
        f"accepted (250)          : {accepted}  (refused {len(refused)},"
        f" client errors {len(errors)})",
        f"accept wall time        : {wall:.2f} s ({wallLabel})",
        f"accept throughput       : {accepted / wall:.1f} msg/s",
    ]


def summaryTail(errors, refused):
    lines = ["=" * 66]
    lines += [f"client error: {e!r}" for e in errors[:3]]
    lines += [f"refused: {r!r}" for r in refused[:3]]
    return lines


def startProgress(interval, line):
    """
    Print C{line()} every C{interval} seconds (with the time since now) from
    a daemon thread.  @return: the function that stops it.
    """
    done = threading.Event()
    t0 = time.perf_counter()

    def report():
        while not done.wait(interval):
            print(f"  ... {time.perf_counter() - t0:6.1f} s: {line()}", flush=True)

    threading.Thread(target=report, daemon=True).start()
    return done.set


def runAll(threads):
    """Start every client thread, then wait for them all."""
    for t in threads:
        t.start()
    for t in threads:
        t.join()


class TimedPool:
    """
    A thread pool that runs the work at once, in the calling thread, and
    adds up its CPU: the reactor side of a cost is the rest.

    @ivar profile: a C{cProfile.Profile} paused during the work, or C{None}.
    """

    def __init__(self):
        self.cpu = 0.0
        self.calls = 0
        self.profile = None

    def callInThreadWithCallback(self, onResult, f, *args, **kwargs):
        if self.profile:
            self.profile.disable()
        start = time.thread_time()
        try:
            result, ok = f(*args, **kwargs), True
        except BaseException:
            from twisted.python.failure import Failure
            result, ok = Failure(), False
        self.cpu += time.thread_time() - start
        self.calls += 1
        if self.profile:
            self.profile.enable()
        onResult(ok, result)

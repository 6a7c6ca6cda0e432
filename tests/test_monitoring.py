"""
The persistent counters and recent events (issue 16, monitoring): the one
recorder (L{pymailer.events.Events}) that moves the Prometheus metrics and
feeds L{pymailer.monitoring}, its buckets, batched flushes and reload, and
the page's charts.  With a L{ClockReactor} and a L{SynchronousThreadPool}:
no global reactor, no sleeping.

End to end (a real server, a browser) in tests/test_web_monitoring.py.
"""

import sqlite3

from twisted.logger import Logger

from pymailer import events as kinds
from pymailer import metrics
from pymailer.events import Event, Events
from pymailer.monitoring import (FLUSH_INTERVAL, HOUR, MINUTE, MonitoringRecorder,
                                 MonitoringStore)
from pymailer.testing import ClockReactor, SynchronousThreadPool
from pymailer.web.charts import barChart
from pymailer.web.monitoring import WINDOWS, readFigures, render

# A Monday, 10:17:30 UTC.
T0 = 1_700_475_450.0


def makeRecorder(path, reactor=None, keep=10_000):
    reactor = reactor or ClockReactor()
    if reactor.seconds() < T0:
        reactor.advance(T0)
    recorder = MonitoringRecorder(MonitoringStore(path, keep=keep), reactor,
                                  SynchronousThreadPool())
    return recorder, reactor


def countRows(path, resolution):
    with sqlite3.connect(path) as db:
        return dict(((b, k, r), n) for b, k, r, n in db.execute(
            "SELECT bucket, kind, reason, n FROM counts WHERE resolution = ?",
            (resolution,)))


def metricValue(counter, *labels):
    return counter.labels(*labels)._value.get()


class TestEvents:
    def test_oneCallMovesMetricAndMonitoring(self, tmp_path):
        """
        One recorded event moves both the Prometheus counter and the
        persistent count: otherwise /metrics and the monitoring page would
        disagree about how much mail came in.
        """
        recorder, reactor = makeRecorder(tmp_path / "m.sqlite")
        events = Events(reactor, recorder)
        before = (metricValue(metrics.MESSAGES_ACCEPTED, "smtp"),
                  metricValue(metrics.DELIVERIES, "expired"),
                  metricValue(metrics.REJECTIONS, "clamav.virus"),
                  metricValue(metrics.AUTH_FAILURES, "imap"),
                  metricValue(metrics.LOCKOUTS, "ip"))
        events.messageAccepted("smtp", "Q1", "a@x.test", ["b@y.test", "c@y.test"], "192.0.2.1")
        events.deliveryOutcome("expired", "Q1", "a@x.test", "b@y.test", "192.0.2.1", "gone")
        events.rejected("clamav.virus", "192.0.2.2", "e@x.test", "b@y.test", "554 virus")
        events.loginFailed("imap", "192.0.2.3", "b@y.test")
        events.lockedOut("ip", "192.0.2.3", "192.0.2.3", "b@y.test")
        after = (metricValue(metrics.MESSAGES_ACCEPTED, "smtp"),
                 metricValue(metrics.DELIVERIES, "expired"),
                 metricValue(metrics.REJECTIONS, "clamav.virus"),
                 metricValue(metrics.AUTH_FAILURES, "imap"),
                 metricValue(metrics.LOCKOUTS, "ip"))
        assert [a - b for a, b in zip(after, before)] == [1] * 5
        recorder.flush()
        found = recorder.store.search()
        assert [(e.kind, e.reason) for e in found] == [
            (kinds.LOCKOUT, "ip"), (kinds.LOGIN_FAILED, "imap"),
            (kinds.REJECTED, "clamav.virus"), (kinds.BOUNCED, "expired"),
            (kinds.RECEIVED, "smtp")]
        assert found[-1].recipient == "b@y.test, c@y.test"
        assert found[-1].queueId == "Q1" and found[-1].clientIP == "192.0.2.1"
        assert found[-1].time == T0

    def test_longClientTextClipped(self, tmp_path):
        """
        An address or reply of megabytes is stored clipped: otherwise one
        hostile client could fill the monitoring file.
        """
        recorder, reactor = makeRecorder(tmp_path / "m.sqlite")
        Events(reactor, recorder).rejected("policy", "192.0.2.1", "x" * 100_000, None, "t")
        recorder.flush()
        assert len(recorder.store.search()[0].sender) < 1000


class TestRecorder:
    def test_bucketsPerMinuteAndHour(self, tmp_path):
        """
        Events land in the minute and the hour they happened in: otherwise
        the charts would put mail in the wrong bar.
        """
        path = tmp_path / "m.sqlite"
        recorder, reactor = makeRecorder(path)
        minute, hour = int(T0 // 60 * 60), int(T0 // 3600 * 3600)
        recorder.record(Event(T0, kinds.RECEIVED))
        recorder.record(Event(T0 + 20, kinds.RECEIVED))
        recorder.record(Event(T0 + 40, kinds.RECEIVED))
        recorder.record(Event(T0 + 3600, kinds.REJECTED, reason="spam"))
        recorder.flush()
        assert countRows(path, MINUTE) == {
            (minute, "received", ""): 2, (minute + 60, "received", ""): 1,
            (minute + 3600, "rejected", "spam"): 1}
        assert countRows(path, HOUR) == {
            (hour, "received", ""): 3, (hour + 3600, "rejected", "spam"): 1}

    def test_flushedEveryIntervalAndAtStop(self, tmp_path):
        """
        Nothing is written per event; the batch is written every
        FLUSH_INTERVAL seconds while running and once more at stop:
        otherwise every message would cost a disk write, or a clean
        shutdown would lose the last events.
        """
        path = tmp_path / "m.sqlite"
        recorder, reactor = makeRecorder(path)
        recorder.startService()
        recorder.record(Event(reactor.seconds(), kinds.RECEIVED))
        assert countRows(path, HOUR) == {}
        reactor.advance(FLUSH_INTERVAL - 1)
        assert countRows(path, HOUR) == {}
        reactor.advance(1)
        assert sum(countRows(path, HOUR).values()) == 1
        recorder.record(Event(reactor.seconds(), kinds.DELIVERED))
        recorder.stopService()
        assert sum(countRows(path, HOUR).values()) == 2
        # Stopped: no timer left behind.
        assert reactor.clock.getDelayedCalls() == []

    def test_countsAndEventsSurviveRestart(self, tmp_path):
        """
        A new recorder on the same file (the server restarted) sees the
        counts and events of the old one, and adds to them: otherwise a
        restart would zero the monitoring page.
        """
        path = tmp_path / "m.sqlite"
        first, reactor = makeRecorder(path)
        first.startService()
        Events(reactor, first).messageAccepted("smtp", "QA", "a@x.test", ["b@y.test"], "::1")
        first.stopService()

        second, _ = makeRecorder(path, reactor)
        second.startService()
        Events(reactor, second).messageAccepted("smtp", "QB", "a@x.test", ["b@y.test"], "::1")
        d = second.query(readFigures, second.store, reactor.seconds(), "")
        binned, _, recent = self.successResultOf(d)
        assert [sum(binned[w.name][kinds.RECEIVED]) for w in WINDOWS] == [2, 2, 2]
        assert [e.queueId for e in recent] == ["QB", "QA"]

    def test_severalWritersAddUp(self, tmp_path):
        """
        Two processes sharing data_dir add their counts to the same rows:
        otherwise one worker's flush would overwrite the other's.
        """
        path = tmp_path / "m.sqlite"
        a, reactor = makeRecorder(path)
        b, _ = makeRecorder(path, reactor)
        for recorder, n in ((a, 3), (b, 4), (a, 1)):
            for _ in range(n):
                recorder.record(Event(reactor.seconds(), kinds.DELIVERED))
            recorder.flush()
        assert sum(countRows(path, MINUTE).values()) == 8
        assert sum(countRows(path, HOUR).values()) == 8

    def test_recentEventsAreARing(self, tmp_path):
        """
        Only the newest N events are kept, in memory between flushes too:
        otherwise the file (and the memory) would grow forever.
        """
        recorder, reactor = makeRecorder(tmp_path / "m.sqlite", keep=5)
        for i in range(8):
            recorder.record(Event(reactor.seconds(), kinds.RECEIVED, queueId=f"Q{i}"))
        recorder.flush()
        for i in range(8, 10):
            recorder.record(Event(reactor.seconds(), kinds.RECEIVED, queueId=f"Q{i}"))
            recorder.flush()
        assert [e.queueId for e in recorder.store.search()] == [f"Q{i}" for i in range(9, 4, -1)]
        # The counts are not a ring: all ten were received.
        assert sum(countRows(tmp_path / "m.sqlite", HOUR).values()) == 10

    def test_failedWriteKeepsCounts(self, tmp_path):
        """
        A write that fails (database locked, disk full) keeps the counts
        for the next flush: otherwise a busy moment would lose them.
        """
        recorder, reactor = makeRecorder(tmp_path / "m.sqlite")
        write = recorder.store.write
        calls = []

        def failing(*args):
            calls.append(args)
            if len(calls) == 1:
                raise sqlite3.OperationalError("database is locked")
            return write(*args)

        recorder.store.write = failing
        logged = []
        recorder.log = Logger(observer=logged.append)
        recorder.record(Event(reactor.seconds(), kinds.RECEIVED))
        recorder.flush()
        recorder.record(Event(reactor.seconds(), kinds.RECEIVED))
        recorder.flush()
        assert sum(countRows(tmp_path / "m.sqlite", HOUR).values()) == 2
        assert [e["log_failure"].check(sqlite3.OperationalError) for e in logged] == [
            sqlite3.OperationalError]

    def test_search(self, tmp_path):
        """
        The search finds events by queue id, either address or client IP,
        in any case, and a % or _ is a plain character: otherwise an admin
        could not find a message's history.
        """
        recorder, reactor = makeRecorder(tmp_path / "m.sqlite")
        now = reactor.seconds()
        for e in (Event(now, kinds.RECEIVED, queueId="ABC123", sender="Ann@X.test",
                        recipient="bob@y.test", clientIP="192.0.2.7"),
                  Event(now, kinds.DELIVERED, queueId="ABC123", sender="Ann@X.test",
                        recipient="bob@y.test"),
                  Event(now, kinds.REJECTED, sender="spam%er@z.test", clientIP="2001:db8::9")):
            recorder.record(e)
        recorder.flush()
        store = recorder.store
        assert [e.kind for e in store.search("abc123")] == ["delivered", "received"]
        assert len(store.search("ann@x.TEST")) == 2
        assert [e.kind for e in store.search("192.0.2.7")] == ["received"]
        assert [e.kind for e in store.search("2001:DB8::9")] == ["rejected"]
        assert [e.kind for e in store.search("%")] == ["rejected"]
        assert store.search("_") == []
        assert len(store.search("", limit=2)) == 2

    # trial's helpers, for a pytest class
    def successResultOf(self, d):
        results = []
        d.addBoth(results.append)
        assert results, "the Deferred has not fired"
        if hasattr(results[0], "raiseException"):
            results[0].raiseException()
        return results[0]


class TestPage:
    def test_windowsBinTheRightSlots(self):
        """
        The hour chart has 12 five-minute bars, the day 24 hourly, the week
        7 daily, the last holding now: otherwise a count would show in the
        wrong bar or fall off the chart.
        """
        hour, day, week = WINDOWS
        now = T0  # Monday 2023-11-20 10:17:30 UTC
        assert hour.labels(now)[-1] == "10:15" and hour.labels(now)[0] == "09:20"
        assert day.labels(now)[-1] == "10:00" and len(day.labels(now)) == 24
        assert week.labels(now) == ["Tue 14", "Wed 15", "Thu 16", "Fri 17", "Sat 18",
                                    "Sun 19", "Mon 20"]
        minute = int(T0 // 60 * 60)
        counts = {(minute, "received"): 2, (minute - 300, "received"): 1,
                  (minute - 3600, "received"): 5}
        assert hour.bin(counts, now)["received"][-2:] == [1, 2]
        assert sum(hour.bin(counts, now)["received"]) == 3

    def test_chartEscapedAndWithoutStyle(self):
        """
        The SVG chart escapes its labels and uses fill= rather than style=:
        otherwise a label could inject markup, or the strict CSP would
        blank the colours.
        """
        svg = barChart('<b>"x"', ["<i>", "b"], [("s<", "#123456", [0, 4]), ("t", "#000", [2, 1])])
        assert "<b>" not in svg and "<i>" not in svg and "&lt;b&gt;" in svg
        assert "style=" not in svg and "<script" not in svg
        assert svg.count('class="bar"') == 4
        assert 'data-value="4"' in svg and 'fill="#123456"' in svg

    def test_renderShowsTotalsEventsAndEscapes(self, tmp_path):
        """
        The page shows each total, the rejections by reason and the events
        with hostile text escaped: otherwise an address could inject markup
        into the admin's page.
        """
        recorder, reactor = makeRecorder(tmp_path / "m.sqlite")
        events = Events(reactor, recorder)
        events.messageAccepted("smtp", "Q1", "<script>@x.test", ["b@y.test"], "192.0.2.1")
        events.rejected("unknown_recipient", "192.0.2.1", "a@x.test", "nobody@y.test", "550")
        recorder.flush()
        now = reactor.seconds()
        html = render(now, *readFigures(recorder.store, now, ""), "")
        assert '<span id="total-received-hour">1</span>' in html
        assert '<span id="total-rejected-week">1</span>' in html
        assert "<td>unknown_recipient</td><td>1</td>" in html
        assert "&lt;script&gt;@x.test" in html and "<script>" not in html

"""
C{/admin/monitoring}: what the server did over the last hour, day and
week (messages received, delivered, deferred, bounced, rejected; failed
logins and lockouts), as totals and bar charts, the rejections by reason,
and the recent events, searchable by queue id, address or client IP.

The figures are the server's own (L{pymailer.monitoring}, kept in
C{data_dir/monitoring.sqlite}): they survive a restart.  Times are UTC.

It shares the login, sessions and page plumbing of L{pymailer.web.admin}
(one L{AdminApp}); admins only.  The charts are inline SVG
(L{pymailer.web.charts}); the search form is a GET (it changes nothing, so
it needs no CSRF token, and the URL can be kept).

Trust: the search text is the client's; it is a bound parameter of the
query and shown escaped, as is every stored value.
"""

import time
from dataclasses import dataclass

from klein import Klein

from pymailer import events as kinds
from pymailer.monitoring import DAY, HOUR, MINUTE, SEARCH_LIMIT, floorTo
from pymailer.web.admin import _arg
from pymailer.web.charts import barChart
from pymailer.web.html import element, join, table

PATH = "/admin/monitoring"
PREFIX = PATH.encode("ascii")
RECENT_SHOWN = 50

# What the charts draw, with their colours (the mail events; logins are in
# the totals table).
CHARTED = ((kinds.RECEIVED, "#2a6fdb"), (kinds.DELIVERED, "#2e9d46"),
           (kinds.DEFERRED, "#d89b00"), (kinds.BOUNCED, "#c0392b"),
           (kinds.REJECTED, "#7d3c98"))
LABELS = {kinds.RECEIVED: "received", kinds.DELIVERED: "delivered",
          kinds.DEFERRED: "deferred", kinds.BOUNCED: "bounced", kinds.REJECTED: "rejected",
          kinds.LOGIN_FAILED: "failed logins", kinds.LOCKOUT: "lockouts"}


@dataclass(frozen=True)
class Window:
    """
    A chart's span: C{slots} slots of C{slot} seconds, the last one holding
    now, read from the counts of C{resolution}.
    """

    name: str
    title: str
    slot: int
    slots: int
    resolution: int
    labelFormat: str

    def start(self, now):
        return floorTo(now, self.slot) - (self.slots - 1) * self.slot

    def labels(self, now):
        start = self.start(now)
        return [time.strftime(self.labelFormat, time.gmtime(start + i * self.slot))
                for i in range(self.slots)]

    def bin(self, counts, now):
        """C{{kind: [n per slot]}} from a store's C{{(bucket, kind): n}}."""
        start = self.start(now)
        out = {kind: [0] * self.slots for kind in kinds.KINDS}
        for (bucket, kind), n in counts.items():
            i = (bucket - start) // self.slot
            if 0 <= i < self.slots and kind in out:
                out[kind][i] += n
        return out


WINDOWS = (Window("hour", "Last hour, per 5 minutes", 300, 12, MINUTE, "%H:%M"),
           Window("day", "Last 24 hours, per hour", HOUR, 24, HOUR, "%H:00"),
           Window("week", "Last 7 days, per day", DAY, 7, HOUR, "%a %d"))


def readFigures(store, now, search):
    """
    Everything the page shows, from C{store} (a L{MonitoringStore}).
    Blocking: run in the thread pool.
    """
    binned = {w.name: w.bin(store.counts(w.resolution, w.start(now)), now) for w in WINDOWS}
    reasons = store.reasons(kinds.REJECTED, WINDOWS[-1].start(now))
    recent = store.search(search, limit=SEARCH_LIMIT if search else RECENT_SHOWN)
    return binned, reasons, recent


def _when(t):
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(t))


def _eventName(event):
    name = LABELS.get(event.kind, event.kind)
    return f"{name} ({event.reason})" if event.reason else name


def render(now, binned, reasons, recent, search):
    """The page's content (L{Markup})."""
    totals = table(
        ["", *(w.title.split(",")[0] for w in WINDOWS)],
        [[LABELS[kind], *(element("span", sum(binned[w.name][kind]),
                                  id=f"total-{kind}-{w.name}") for w in WINDOWS)]
         for kind in kinds.KINDS])
    charts = [join([element("h2", w.title),
                    barChart(w.title, w.labels(now),
                             [(LABELS[kind], colour, binned[w.name][kind])
                              for kind, colour in CHARTED])])
              for w in WINDOWS]
    byReason = (table(["Reason", "Rejections"], reasons) if reasons
                else element("p", "No rejections."))
    searchForm = element("form", join([
        element("label", join(["Queue id, address or IP ",
                               element("input", name="q", type="search", value=search)])),
        element("button", "Search", type="submit")]), method="get", action=PATH)
    rows = [[_when(e.time), _eventName(e), e.queueId, e.sender, e.recipient, e.clientIP, e.text]
            for e in recent]
    heading = (f"Events matching \u201c{search}\u201d ({len(rows)})" if search
               else f"The last {RECENT_SHOWN} events")
    return join([
        element("p", "All times UTC. Counted by the server itself; kept across restarts."),
        totals, *charts,
        element("h2", "Rejections by reason, last 7 days"), byReason,
        element("h2", "Recent events"), searchForm,
        element("h3", heading),
        table(["Time", "Event", "Queue id", "From", "To / account", "Client", "Result"], rows)
        if rows else element("p", "No events."),
    ])


class MonitoringApp:
    """
    The route of C{/admin/monitoring}.

    @param admin: the L{pymailer.web.admin.AdminApp} whose sessions and
        pages this shares.
    @param recorder: the service's L{pymailer.monitoring.MonitoringRecorder}.
    """

    app = Klein()

    def __init__(self, admin, recorder):
        self.admin = admin
        self.recorder = recorder
        self.clock = admin.reactor

    @app.route(PATH, methods=["GET"])
    def page(self, request):
        # A search box's text, bounded: it is a substring to look for.
        search = _arg(request, "q")[:200]
        return self.admin._adminPage(request, "Monitoring", PATH,
                                     lambda session: self._content(search))

    def _content(self, search):
        now = self.clock.seconds()
        d = self.recorder.query(readFigures, self.recorder.store, now, search)
        return d.addCallback(lambda figures: render(now, *figures, search))

"""
The webmail's one script, served from our origin (C{/webmail/webmail.js})
and allowed by the page's CSP through a per-response nonce: no inline
script, no other origin.  Progressive enhancement only: every page works
without it (the Move menu, the Reload of the browser).

 - Drag and drop: a message row dropped on a folder of the folder list
   is moved there by submitting the page's own action form (the Move
   button, with the row chosen and the folder as target): the same POST,
   CSRF token and answer as without the script.
 - Live updates: the folder page polls C{/webmail/state} (a short token
   of the folder's UIDVALIDITY, UIDNEXT, HIGHESTMODSEQ and every folder's
   counts) every few seconds and reloads when it changed, unless the user
   has messages ticked or is typing a search (then it says so instead).  It stops polling after
   L{IDLE_MINUTES} without the user doing anything, so that an open tab
   does not keep the session alive for ever.
"""

PATH = "/webmail/webmail.js"
POLL_SECONDS = 3
# Below the sessions' idle timeout (pymailer.web.sessions.IDLE_TIMEOUT, 30 min).
IDLE_MINUTES = 25

SCRIPT = ("""\
(function () {
  "use strict";
  var form = document.querySelector("form.message-actions");
  var dragging = false;
  if (form) {
    var rows = document.querySelectorAll("ul.list li[data-uid]");
    Array.prototype.forEach.call(rows, function (row) {
      row.setAttribute("draggable", "true");
      row.addEventListener("dragstart", function (event) {
        dragging = true;
        var box = row.querySelector("input[name=uid]");
        if (box) { box.checked = true; }
        event.dataTransfer.setData("text/plain", row.getAttribute("data-uid"));
        event.dataTransfer.effectAllowed = "move";
      });
      row.addEventListener("dragend", function () { dragging = false; });
    });
    var links = document.querySelectorAll(".folders a[data-folder]");
    Array.prototype.forEach.call(links, function (link) {
      link.addEventListener("dragover", function (event) {
        event.preventDefault();
        link.classList.add("drop-target");
      });
      link.addEventListener("dragleave", function () { link.classList.remove("drop-target"); });
      link.addEventListener("drop", function (event) {
        event.preventDefault();
        link.classList.remove("drop-target");
        var target = form.querySelector("select[name=target]");
        target.value = link.getAttribute("data-folder");
        if (target.value !== link.getAttribute("data-folder")) { return; }  // this folder
        form.requestSubmit(form.querySelector("button[value=move]"));
      });
    });
  }
  var live = document.getElementById("live");
  if (live) {
    var lastActive = Date.now();
    ["mousemove", "keydown", "click", "touchstart", "scroll"].forEach(function (kind) {
      window.addEventListener(kind, function () { lastActive = Date.now(); }, {passive: true});
    });
    var timer = setInterval(function () {
      if (Date.now() - lastActive > %(idle)d * 60000) { clearInterval(timer); return; }
      fetch(live.getAttribute("data-url"), {credentials: "same-origin", cache: "no-store"})
        .then(function (answer) { return answer.ok ? answer.json() : null; })
        .then(function (answer) {
          if (!answer || answer.state === live.getAttribute("data-state")) { return; }
          var typing = document.activeElement &&
            document.activeElement.matches("input[type=search], select");
          if (dragging || typing || document.querySelector("input[name=uid]:checked")) {
            live.hidden = false;
            return;
          }
          window.location.reload();
        })
        .catch(function () {});
    }, %(poll)d * 1000);
  }
})();
""" % {"idle": IDLE_MINUTES, "poll": POLL_SECONDS}).encode("ascii")

#!/bin/bash
# imap_side_by_side.sh WORKDIR [ROUNDS]
# IMAP, Dovecot (Debian's) vs pymailer ([storage] backend = "sqlite"), the same load
# (bench/imap_ops.py) in one run on this machine, interleaved.
#  - sessions: CLIENTS (10) imaplib processes in long sessions (login once; SELECT,
#    FETCH 1:* (FLAGS), FETCH 5x BODY.PEEK[], STORE, APPEND, STORE \Deleted, EXPUNGE),
#    one INBOX of 100 messages (1-10 KB) each, DURATION (20) s per run; ROUNDS (3) runs
#    each, alternating. Prints commands/s per run, the ratio of medians, and each
#    server's peak memory (pymailer: VmHWM of its process, summed over its workers with
#    WORKERS=N; Dovecot: the highest sum of RSS over its processes, sampled every 0.5 s,
#    since it has one per session).  WORKERS (1): pymailer's [server] workers; its own
#    default is one per core, the bench's 1 shows what one process (one GIL) does.
#  - a BIG-message INBOX (100,000; ~1 KB, 90 % \Seen) on both: SELECT + UID FETCH 1:*
#    (FLAGS), twice (the first builds Dovecot's index), and the ratio of the second.
# Dovecot: the reference config of ../shared/bench/reference/dovecot on ports 20143 (so
# as not to clash with reference-servers.sh), mailboxes written as Maildir files in place.
# pymailer: this tree (bench/imap_ops.py --serve), mailboxes appended through the store
# API. Needs dovecot-core dovecot-imapd (apt-get install -y dovecot-core dovecot-imapd
# dovecot-pop3d) and a vmail user (useradd -r vmail); run as root.
set -u
here=$(cd "$(dirname "$0")" && pwd)
W=${1:?usage: $0 WORKDIR [ROUNDS]}; ROUNDS=${2:-3}
CLIENTS=${CLIENTS:-10}; DURATION=${DURATION:-20}; BIG=${BIG:-100000}; PORT=${PORT:-20143}
WORKERS=${WORKERS:-1}  # pymailer's [server] workers (its own default: one per core)
PY=${PY:-$(cd "$here/.." && pwd)/.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
REF=${REF:-/work/shared/bench/reference/dovecot}
OPS="$here/imap_ops.py"
rm -rf "$W"; mkdir -p "$W/dovecot/run" "$W/dovecot/state" "$W/dovecot/mail" "$W/pm"
chmod 755 "$W"
id vmail >/dev/null 2>&1 || useradd -r vmail

# -- Dovecot --------------------------------------------------------------------------
D="$W/dovecot"
openssl req -x509 -newkey rsa:2048 -nodes -days 30 -subj /CN=localhost \
  -keyout "$D/key.pem" -out "$D/cert.pem" 2>/dev/null
sed -e "s#@REF@#$W#g" -e "s#port = 10143#port = $PORT#" -e "s#port = 10993#port = $((PORT + 850))#" \
  -e "s#port = 10110#port = $((PORT - 33))#" -e "s#port = 10995#port = $((PORT + 852))#" \
  -e "s#instance_name = dovecot-ref#instance_name = dovecot-side#" \
  "$REF/dovecot.conf" >"$D/dovecot.conf"
DUSERS=$(seq -f "u%04g" 1 "$CLIENTS" | paste -sd,)
{ cat "$REF/users"; echo "big:{PLAIN}testpass"; } >"$D/users"
"$PY" "$OPS" --fill-maildir "$D/mail" --users "$DUSERS" --big-user big --big "$BIG" || exit 1
chown -R vmail:vmail "$D/mail"
dovecot -c "$D/dovecot.conf" </dev/null || exit 1
for i in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/$PORT) 2>/dev/null && break; sleep 0.2; done

# -- pymailer -------------------------------------------------------------------------
coproc PM { exec "$PY" "$OPS" --serve "$W/pm" --backend sqlite --clients "$CLIENTS" --big "$BIG" \
  --workers "$WORKERS" 2>&1; }
PMIN=${PM[1]}
while read -r line <&"${PM[0]}"; do
  echo "pymailer: $line"
  case "$line" in READY*) break ;; esac
done
eval "${line#READY }"   # port= pid= users=
PMPORT=$port; PMPID=$pid; PMUSERS=$users
[ -n "$PMPID" ] || { echo "pymailer did not start"; exit 1; }

dovecotRSS() {  # highest sum of RSS (kB) of this instance's processes while $1 runs
  local peak=0 sum master
  master=$(cat "$D/run/master.pid")
  while kill -0 "$1" 2>/dev/null; do
    sum=$({ ps -o rss= -p "$master"; ps -o rss= --ppid "$master"; } | awk '{s+=$1} END {print s+0}')
    [ "$sum" -gt "$peak" ] && peak=$sum
    sleep 0.5
  done
  echo "$peak"
}
rate() { awk '/^commands\/s/ {print int($3)}' "$1"; }
: >"$W/rates"
for r in $(seq "$ROUNDS"); do
  "$PY" "$OPS" --target 127.0.0.1:$PORT --users "$DUSERS" --password testpass --big 0 \
    --label dovecot --long --clients "$CLIENTS" --duration "$DURATION" >"$W/dovecot.$r" 2>&1 &
  peak=$(dovecotRSS $!); wait $!
  echo "round $r dovecot  commands/s $(rate "$W/dovecot.$r")  peak RSS sum ${peak} kB" | tee -a "$W/rates"
  "$PY" "$OPS" --target 127.0.0.1:$PMPORT --users "$PMUSERS" --big 0 --server-pid "$PMPID" \
    --label pymailer --long --clients "$CLIENTS" --duration "$DURATION" >"$W/pymailer.$r" 2>&1
  echo "round $r pymailer commands/s $(rate "$W/pymailer.$r")  $(grep VmHWM "$W/pymailer.$r" | cut -c27-)" | tee -a "$W/rates"
  grep -h "^client error" "$W/dovecot.$r" "$W/pymailer.$r" | head -3
done
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
DMED=$(awk '/dovecot/ {print $5}' "$W/rates" | median)
PMED=$(awk '/pymailer/ {print $5}' "$W/rates" | median)
echo "sessions: dovecot median $DMED commands/s, pymailer median $PMED, ratio $(echo "scale=2; $PMED / $DMED" | bc)"

if [ "$BIG" -gt 0 ]; then
  "$PY" "$OPS" --target 127.0.0.1:$PORT --users "$DUSERS" --password testpass --duration 0 \
    --big "$BIG" --big-user big --label dovecot >"$W/dovecot.big" 2>&1
  "$PY" "$OPS" --target 127.0.0.1:$PMPORT --duration 0 --big "$BIG" --server-pid "$PMPID" \
    --label pymailer >"$W/pymailer.big" 2>&1
  cat "$W/dovecot.big" "$W/pymailer.big" | grep -v '^$'
  both() { awk '/^second (SELECT|UID FETCH)/ {s+=$(NF-1)} END {print s}' "$1"; }
  DB=$(both "$W/dovecot.big"); PB=$(both "$W/pymailer.big")
  echo "big mailbox: second SELECT + UID FETCH 1:* (FLAGS): dovecot ${DB} s, pymailer ${PB} s," \
       "ratio $(echo "scale=2; $PB / $DB" | bc) (goal <= 2)"
  echo "pymailer VmHWM since start: $(grep VmHWM "$W/pymailer.big" | cut -c27-)"
fi

exec {PMIN}>&-   # pymailer --serve stops when its stdin closes
wait "$PM_PID" 2>/dev/null
[ -f "$D/run/master.pid" ] && kill "$(cat "$D/run/master.pid")"
exit 0

#!/bin/bash
# smtp_side_by_side.sh WORKDIR [ROUNDS]
# Durable SMTP accept, Postfix (Debian's) vs pymailer (this tree), interleaved in one
# run on this machine, with Postfix's own load generator: smtp-source -s S -m M -l L
# (20 sessions, a new connection per message, 4 KiB messages). Both answer 250 only
# after an fsync.
#  - Postfix: a private instance (config, queue and data directories under
#    WORKDIR/postfix; /etc/postfix is not touched) from bench/reference/postfix on
#    127.0.0.1:$PFPORT: smtpd -> cleanup (fsync) -> qmgr -> discard.
#  - pymailer: twistd from this tree on 127.0.0.1:$PMPORT, delivering to a local user
#    in the default store; for each of WORKERS ("1 0": 0 leaves [server] workers out,
#    one worker per core) and each of CHECKS ("none chain": no policy checks, like the
#    Postfix reference; then SPF, DKIM, ARC and DMARC against a loopback DNS,
#    bench/dns_zone.py). While the load runs, bench/smtp_probe.py sends one message
#    every 0.5 s to another user and times it from its 250 to its INBOX.
# With OTHER=DIR, every pymailer variant also runs from the tree in DIR (labelled
# "-other"), in the same rounds: before and after a change, side by side.
# Each round runs Postfix, then every pymailer variant. Prints one line per run, then
# per variant the median rate and the ratio of medians against Postfix's.
# Needs: apt-get install postfix (smtp-source comes with it), bc; run as root.
set -u
here=$(cd "$(dirname "$0")" && pwd)
tree=$(cd "$here/.." && pwd)
W=${1:?usage: $0 WORKDIR [ROUNDS]}; ROUNDS=${2:-3}
M=${M:-2000}; S=${S:-20}; L=${L:-4096}
WORKERS=${WORKERS:-1 0}; CHECKS=${CHECKS:-none chain}
# Ports below the ephemeral range (32768-60999): the load's client sockets
# would otherwise sometimes hold the port a server is about to bind.
PFPORT=${PFPORT:-21025}; PMPORT=${PMPORT:-21026}; DNSPORT=${DNSPORT:-21053}
PY=${PY:-$tree/.venv/bin/python}
[ -x "$PY" ] || PY=/work/main/.venv/bin/python
OTHER=${OTHER:-}
rm -rf "$W"; mkdir -p "$W"; chmod 755 "$W"

# -- Postfix ---------------------------------------------------------------------------
P="$W/postfix"
mkdir -p "$P/etc" "$P/queue" "$P/data"; chown postfix "$P/data"
for f in main.cf master.cf; do
  sed -e "s#@W@#$P#g" -e "s#@PORT@#$PFPORT#g" "$here/reference/postfix/$f" >"$P/etc/$f"
done
postfix -c "$P/etc" start </dev/null >/dev/null 2>&1 || { tail -3 "$P/maillog"; exit 1; }
trap 'postfix -c "$P/etc" stop >/dev/null 2>&1; kill $DNSPID 2>/dev/null' EXIT

"$PY" "$here/dns_zone.py" $DNSPORT "TXT:remote.test:v=spf1 ip4:127.0.0.1 -all" \
  "TXT:_dmarc.remote.test:v=DMARC1; p=none" &
DNSPID=$!

waitPort() { for i in $(seq 150); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.2; done; return 1; }
waitPort $PFPORT || { echo "postfix did not start"; exit 1; }

startpm() {  # $1 = label, $2 = checks (TOML list), $3 = workers (0: one per core), $4 = tree
  export PYTHONPATH=$4
  local d="$W/$1"; rm -rf "$d"; mkdir -p "$d"
  # The last run's workers may still be closing the port.
  for i in $(seq 50); do ss -tlnH "sport = :$PMPORT" | grep -q . || break; sleep 0.2; done
  {
    echo "hostname = \"mx.example.org\""
    echo "data_dir = \"$d/data\""
    [ "$3" != 0 ] && printf '[server]\nworkers = %s\n' "$3"
    echo "[listen]"
    echo "smtp = \"tcp:$PMPORT:interface=127.0.0.1\""
    echo "[smtp]"
    echo "max_connections_per_ip = 1000"
    echo "[policy]"
    echo "checks = $2"
    echo "[dns]"
    echo "servers = [\"127.0.0.1:$DNSPORT\"]"
  } >"$d/pm.toml"
  "$PY" -m pymailer --config "$d/pm.toml" domain add example.org >/dev/null
  for u in alice bob; do
    echo pw-long-enough | "$PY" -m pymailer --config "$d/pm.toml" user add $u@example.org \
      --password-stdin >/dev/null
  done
  (cd "$d" && exec "$(dirname "$PY")/twistd" -n --pidfile= pymailer \
     --config "$d/pm.toml" >"$d/log" 2>&1) &
  PMPID=$!
  waitPort $PMPORT || { echo "pymailer did not start"; tail "$d/log"; exit 1; }
  # The parent binds the port before its workers have started: the load
  # (and the CPU count) begins once every worker is ready, as Postfix,
  # started once before the rounds, is warm too.
  local want=$3
  [ "$want" = 0 ] && want=$(nproc)
  [ "$want" -gt 1 ] && for i in $(seq 150); do  # (one process serves once the port is open)
    [ "$(grep -c 'worker [0-9]* ready' "$d/log")" -ge "$want" ] && break
    sleep 0.2
  done
}
stoppm() { kill $PMPID 2>/dev/null; wait $PMPID 2>/dev/null; }
queued() { find "$1/data/queue/data" -type f 2>/dev/null | wc -l; }
# CPU time (clock ticks) of a process tree: the process's own and its reaped
# children's (/proc/PID/stat fields 14-17), plus its live children's.  The
# load-independent side of the comparison: what each message costs in CPU.
ticks() {
  local t c
  t=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | awk '{print $12+$13+$14+$15}')
  for c in $(ps -o pid= --ppid "$1"); do
    t=$((t + $(sed 's/.*) //' "/proc/$c/stat" 2>/dev/null | awk '{print $12+$13}') + 0))
  done
  echo "${t:-0}"
}
HZ=$(getconf CLK_TCK)

run() {  # label port from to pid: one smtp-source run, prints its rate and CPU per message
  local t0 t1 rc c0 c1
  c0=$(ticks "$5"); t0=$(date +%s.%N)
  smtp-source -4 -s $S -m $M -l $L -f "$3" -t "$4" "127.0.0.1:$2"; rc=$?
  t1=$(date +%s.%N)
  # Postfix: until its queue is empty (qmgr and discard are part of the cost);
  # pymailer: its queue is drained (delivery) before the CPU is read.
  [ "$1" = postfix ] && while [ -n "$(find "$P/queue/incoming" "$P/queue/active" -type f | head -1)" ]; do sleep 0.1; done
  RATE=$(echo "$M / ($t1 - $t0)" | bc -l | cut -d. -f1)
  C0=$c0; CPUPID=$5
  echo "$1 rc=$rc rate=$RATE" | tee -a "$W/rates"
  [ "$1" = postfix ] && cpu "$1"
}
cpu() {  # label: CPU ms per message since the run started
  local ms
  ms=$(echo "scale=2; ($(ticks "$CPUPID") - $C0) * 1000 / $HZ / $M" | bc)
  echo "  $1 cpu_ms_per_msg=$ms" | tee -a "$W/cpu"
}

variant() {  # label checks workers tree: one pymailer run, with the probe and the drain
  local label=$1 d="$W/$1" list t0 probe
  case $2 in none) list='[]' ;; *) list='["spf", "dkim", "arc", "dmarc"]' ;; esac
  startpm "$label" "$list" "$3" "$4"
  rm -f "$d/stop"
  "$PY" "$here/smtp_probe.py" "$d/pm.toml" $PMPORT bob@example.org "$d/stop" \
    >"$d/probe" 2>&1 &
  probe=$!
  run "$label" $PMPORT bench@remote.test alice@example.org $PMPID
  touch "$d/stop"
  # Delivery after the load: until the spool holds no message data.
  t0=$(date +%s.%N)
  while [ "$(queued "$d")" -gt 0 ] && [ $(( $(date +%s) - ${t0%.*} )) -lt 300 ]; do
    sleep 0.2
  done
  wait $probe
  cpu "$label"
  echo "  $label left_in_queue=$(queued "$d") drain_s=$(echo "$(date +%s.%N) - $t0" | bc | cut -c1-5)" \
    "$(cat "$d/probe")"
  stoppm
}

for r in $(seq "$ROUNDS"); do
  run postfix $PFPORT bench@localhost bench@localhost "$(tr -d " " <"$P/queue/pid/master.pid")"
  for checks in $CHECKS; do
    for workers in $WORKERS; do
      variant "pymailer-$checks-w$workers" $checks $workers "$tree"
      [ -n "$OTHER" ] && variant "pymailer-$checks-w$workers-other" $checks $workers "$OTHER"
    done
  done
done

median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }
rateOf() { grep "^$1 " "$W/rates" | sed 's/.*rate=//' | median; }
cpuOf() { grep " $1 " "$W/cpu" | sed 's/.*=//' | median; }
PF=$(rateOf postfix); PFC=$(cpuOf postfix)
echo "postfix median $PF msg/s, $PFC CPU ms/msg (M=$M S=$S L=$L, $ROUNDS rounds)"
for checks in $CHECKS; do
  for workers in $WORKERS; do
    for label in "pymailer-$checks-w$workers" ${OTHER:+"pymailer-$checks-w$workers-other"}; do
      PM=$(rateOf "$label"); PMC=$(cpuOf "$label")
      echo "$label median $PM msg/s ratio $(echo "scale=2; $PM / $PF" | bc);" \
        "$PMC CPU ms/msg, $(echo "scale=1; $PMC / $PFC" | bc)x Postfix's"
    done
  done
done

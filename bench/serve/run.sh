#!/usr/bin/env bash
# make bench-serve: memcaslap (libmemcached-tools) against marlin serve and
# against memcached on this machine, one after the other, with the same
# load, ROUNDS times (the machine is shared: one pair of runs can be off
# by 20%); prints each pair's throughput and ratio, the median ratio, and
# the last pair's full summaries.
#
#   bench/serve/run.sh [seconds] [threads] [concurrency] [rounds]
#
# Both servers run on 127.0.0.1; marlin serve keeps its data in a temp
# dir (removed afterwards) with its default sync mode (periodic). Then
# 10,000 idle connections are opened to each (bench/serve/loadgen -mode
# idle: each served one version, then silent) and the growth of the
# server's anonymous memory (RssAnon) is printed per connection.
set -euo pipefail
secs=${1:-20}; threads=${2:-2}; conc=${3:-32}; rounds=${4:-3}
bin=${MARLIN:-bin/marlin}
for t in memcaslap memcached; do
  command -v "$t" >/dev/null || { echo "bench-serve needs $t (apt-get install libmemcached-tools memcached)" >&2; exit 1; }
done
dir=$(mktemp -d)
ulimit -n "$(ulimit -Hn)"
nidle=10000; [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt 10200 ] && nidle=$(( $(ulimit -n) - 200 ))
go build -o "$dir/loadgen" ./bench/serve/loadgen
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; wait 2>/dev/null || true; rm -rf "$dir"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "server on $1 did not start" >&2; exit 1; }

mport=$(port); "$bin" serve --dir "$dir/db" --listen 127.0.0.1:"$mport" --max-conns 20000 2>"$dir/marlin.log" & mpid=$!; pids+=($mpid)
cport=$(port); memcached -u "$(id -un)" -l 127.0.0.1 -p "$cport" -m 1024 -c 20000 & cpid=$!; pids+=($cpid)
waitfor "$mport"; waitfor "$cport"

# An error reply (memcaslap prints each) fails the run: throughput of
# errors is no throughput.
run() {
  local out; out=$(memcaslap -s 127.0.0.1:"$1" -t "${secs}s" -T "$threads" -c "$conc" 2>&1)
  if grep -q 'ERROR' <<<"$out"; then echo "memcaslap got error replies from 127.0.0.1:$1:" >&2; grep -m 5 'ERROR' <<<"$out" >&2; exit 1; fi
  tail -n 15 <<<"$out"
}
tps() { sed -n 's/.*TPS: \([0-9]*\).*/\1/p'; }
echo "== memcaslap -t ${secs}s -T $threads -c $conc: marlin serve (sync periodic), then memcached $(memcached -V | cut -d' ' -f2), $rounds times"
ratios=()
for r in $(seq "$rounds"); do
  m=$(run "$mport"); c=$(run "$cport")
  mt=$(tps <<<"$m"); ct=$(tps <<<"$c")
  ratios+=("$(python3 -c "print(f'{$mt/$ct:.3f}')")")
  echo "round $r: marlin ${mt} ops/s, memcached ${ct} ops/s: ${ratios[-1]}x"
done
echo "median ratio: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')x"
echo "== the last round's summaries: marlin serve"; echo "$m"
echo "== memcached"; echo "$c"

rssanon() { awk '/^RssAnon:/{print $2}' /proc/"$1"/status; }
idle() { # port pid: KiB of RssAnon per idle connection
  local before after lp; before=$(rssanon "$2")
  "$dir/loadgen" -addr 127.0.0.1:"$1" -mode idle -conns "$nidle" -time 15s >"$dir/idle.out" & lp=$!
  for _ in $(seq 600); do grep -q ready "$dir/idle.out" 2>/dev/null && break; sleep 0.1; done
  sleep 12; after=$(rssanon "$2"); wait "$lp"
  python3 -c "print(f'{($after-$before)/$nidle:.2f} KiB per connection')"
}
echo "== $nidle idle connections (RssAnon growth)"
echo "marlin serve: $(idle "$mport" "$mpid")"
echo "memcached:    $(idle "$cport" "$cpid")"

#!/usr/bin/env bash
# make bench-serve-10m: marlin serve and memcached on a database of ten
# million keys, then marlin serve alone with a tenth of its data's size as
# its memory limit.
#
#   bench/serve/big.sh [keys] [seconds] [rounds]
#
# 1. Both servers are filled with KEYS keys of 100 bytes (bench/serve/
#    loadgen, pipelined noreply sets), marlin serve with its default sync
#    mode (periodic), its data in a temp dir on disk.
# 2. memcaslap -t SECS -T 2 -c 32 against each (its own 90/10 get/set mix
#    over its own keys, next to the ten million), in turn, ROUNDS times:
#    throughput, p99 from its log2 latency histogram (the bucket's upper
#    bound), each round's ratio and the median.
# 3. loadgen get against each: uniform random gets of the ten million
#    keys, 32 connections: throughput and exact percentiles.
# 4. marlin serve is restarted on a second database of KEYS keys of 1000
#    bytes inside a memory cgroup (v1) whose limit is a tenth of that
#    database's size on disk (page cache included, as the kernel charges
#    it), with the page cache dropped first; loadgen get as in 3, once
#    with --io loop and once with --io goroutine.
# Everything is deleted afterwards. Needs root (cgroup, drop_caches),
# memcaslap and memcached.
set -euo pipefail
keys=${1:-10000000}; secs=${2:-20}; rounds=${3:-3}
bin=${MARLIN:-bin/marlin}
for t in memcaslap memcached; do
  command -v "$t" >/dev/null || { echo "bench-serve-10m needs $t (apt-get install libmemcached-tools memcached)" >&2; exit 1; }
done
lg=$(mktemp -d)/loadgen
go build -o "$lg" ./bench/serve/loadgen
dir=$(mktemp -d -p "${TMPDIR:-/tmp}" marlin-serve-10m.XXXXXX)
cg=/sys/fs/cgroup/memory/marlin-bench-$$
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  [ -d "$cg" ] && rmdir "$cg" 2>/dev/null || true
  rm -rf "$dir" "$(dirname "$lg")"
}
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
waitfor() { for _ in $(seq 200); do (exec 3<>/dev/tcp/127.0.0.1/"$1") 2>/dev/null && return 0; sleep 0.05; done; echo "server on $1 did not start" >&2; exit 1; }
rss() { grep -E '^(VmHWM|RssAnon)' /proc/"$1"/status | tr -s ' ' | tr '\n' ' '; }
p99() { # the upper bound (µs) of the log2 bucket holding the 99th percentile of memcaslap's Total Statistics
  awk '/^Total Statistics \(/{t=1} t&&/Log2 Dist:/{d=1;next} t&&d&&/^ *[0-9]+:/{b=$1+0; for(i=2;i<=NF;i++){c[b+i-2]=$i; n+=$i}; next} t&&d&&!/^ *[0-9]+:/{d=0;t=0}
       END{s=0; for(k=0;k<64;k++){s+=c[k]; if(s>=0.99*n){print 2^(k+1); exit}}}'
}

echo "== fill: $keys keys of 100 bytes"
mport=$(port); "$bin" serve --dir "$dir/small" --listen 127.0.0.1:"$mport" 2>"$dir/marlin.log" & mpid=$!; pids+=($mpid)
cport=$(port); memcached -u "$(id -un)" -l 127.0.0.1 -p "$cport" -m 8192 -c 4096 & cpid=$!; pids+=($cpid)
waitfor "$mport"; waitfor "$cport"
echo "marlin serve:"; "$lg" -addr 127.0.0.1:"$mport" -mode fill -keys "$keys" -value 100 -conns 8
echo "memcached:";    "$lg" -addr 127.0.0.1:"$cport" -mode fill -keys "$keys" -value 100 -conns 8
echo "marlin serve after the fill: $(rss $mpid), on disk $(du -sh "$dir/small" | cut -f1)"
echo "memcached after the fill: $(rss $cpid)"

run() {
  local out; out=$(memcaslap -s 127.0.0.1:"$1" -t "${secs}s" -S "${secs}s" -T 2 -c 32 2>&1)
  if grep -q 'ERROR' <<<"$out"; then echo "memcaslap got error replies from 127.0.0.1:$1:" >&2; grep -m 5 'ERROR' <<<"$out" >&2; exit 1; fi
  echo "$out"
}
echo; echo "== memcaslap -t ${secs}s -T 2 -c 32, marlin serve then memcached, $rounds times"
ratios=()
for r in $(seq "$rounds"); do
  m=$(run "$mport"); c=$(run "$cport")
  mt=$(echo "$m" | sed -n 's/.*TPS: \([0-9]*\).*/\1/p'); ct=$(echo "$c" | sed -n 's/.*TPS: \([0-9]*\).*/\1/p')
  mp=$(echo "$m" | p99); cp=$(echo "$c" | p99)
  ratios+=("$(python3 -c "print(f'{$mt/$ct:.3f}')")")
  echo "round $r: marlin serve $mt ops/s, p99 <= $mp µs; memcached $ct ops/s, p99 <= $cp µs: ${ratios[-1]}x"
done
echo "median ratio: $(printf '%s\n' "${ratios[@]}" | sort -n | awk '{a[NR]=$1} END{print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}')x"

echo; echo "== loadgen get: uniform over the $keys keys, 32 connections, ${secs}s"
echo -n "marlin serve: "; "$lg" -addr 127.0.0.1:"$mport" -mode get -keys "$keys" -conns 32 -time "${secs}s"
echo -n "memcached:    "; "$lg" -addr 127.0.0.1:"$cport" -mode get -keys "$keys" -conns 32 -time "${secs}s"
kill "$mpid" "$cpid"; wait "$mpid" "$cpid" 2>/dev/null || true
rm -rf "$dir/small"

echo; echo "== data ten times the memory limit: $keys keys of 1000 bytes"
mport=$(port); "$bin" serve --dir "$dir/big" --listen 127.0.0.1:"$mport" 2>"$dir/marlin-big.log" & mpid=$!; pids+=($mpid)
waitfor "$mport"
"$lg" -addr 127.0.0.1:"$mport" -mode fill -keys "$keys" -value 1000 -conns 8
kill "$mpid"; wait "$mpid" 2>/dev/null || true
size=$(du -sb "$dir/big" | cut -f1); limit=$((size / 10))
# Below 128 MiB the Go runtime and the index alone would not fit (small
# test runs only: ten million keys make a limit near 1 GiB).
[ "$limit" -lt $((128 << 20)) ] && limit=$((128 << 20))
echo "database on disk: $((size >> 20)) MiB; memory limit $((limit >> 20)) MiB (page cache, index and heap together)"
mkdir "$cg"; echo "$limit" > "$cg/memory.limit_in_bytes"
# Once per way of serving connections: an event loop waits for each read
# that misses the page cache, a goroutine per connection only its own.
for io in loop goroutine; do
  sync; echo 3 > /proc/sys/vm/drop_caches; echo 0 > "$cg/memory.max_usage_in_bytes" 2>/dev/null || true
  mport=$(port)
  sh -c "echo \$\$ > $cg/cgroup.procs; exec $bin serve --dir $dir/big --listen 127.0.0.1:$mport --io $io" 2>"$dir/marlin-big.log" & mpid=$!; pids+=($mpid)
  waitfor "$mport"
  echo -n "marlin serve --io $io (limited): "; "$lg" -addr 127.0.0.1:"$mport" -mode get -keys "$keys" -conns 32 -time "${secs}s"
  echo "cgroup peak $(( $(cat "$cg/memory.max_usage_in_bytes") >> 20 )) MiB, failcnt $(cat "$cg/memory.failcnt"); server $(rss $mpid)"
  kill "$mpid"; wait "$mpid" 2>/dev/null || true
done

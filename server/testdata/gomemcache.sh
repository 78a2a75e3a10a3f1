#!/usr/bin/env bash
# make test-gomemcache: gomemcache's own client test suite, unchanged,
# against marlin serve.
#
# github.com/bradfitz/gomemcache/memcache's TestLocalhost runs the client's
# whole test (set, get, cas, add, append, prepend, replace, GetMulti,
# delete, incr/decr, touch with expiry, flush_all, ping) against whatever
# listens on localhost:11211, and skips when nothing does. This script
# builds marlin, serves an empty database there, runs that test at the
# version go.mod requires, and fails unless it ran and passed (a skip is a
# failure). TestLocalhost is the only upstream test that talks to
# localhost:11211; the others use a fake server or start memcached.
#
# 11211 must be free on 127.0.0.1 and ::1 (the test dials "localhost", which
# may be either). With CI=true a memcached service holding it (apt-get
# install memcached starts one) is stopped; otherwise the script stops
# nothing and says what holds the port.
set -euo pipefail
cd "$(dirname "$0")/../.."
GO=${GO:-go}
PORT=11211
PKG=github.com/bradfitz/gomemcache/memcache

listening() { # host: something accepts connections on host:PORT
  (exec 3<>"/dev/tcp/$1/$PORT") 2>/dev/null
}
port_taken() { listening 127.0.0.1 || listening ::1; }
holder() {
  if command -v ss >/dev/null; then ss -ltnp "sport = :$PORT" 2>/dev/null | tail -n +2; fi
}

if port_taken; then
  if [ "${CI:-}" = true ] && { { command -v pgrep >/dev/null && pgrep -x memcached >/dev/null; } ||
    service memcached status >/dev/null 2>&1; }; then
    echo "test-gomemcache: CI=true and memcached holds port $PORT (the Debian package's service): stopping it" >&2
    SUDO=""
    if [ "$(id -u)" != 0 ]; then SUDO=sudo; fi
    $SUDO service memcached stop >&2 || true
    for _ in $(seq 50); do port_taken || break; sleep 0.1; done
  fi
  if port_taken; then
    echo "test-gomemcache: port $PORT on localhost is taken; gomemcache's TestLocalhost needs it for marlin serve." >&2
    holder >&2
    echo "Stop what listens there (a system memcached: sudo service memcached stop), or run with CI=true to let this script stop a memcached service." >&2
    exit 1
  fi
fi

tmp=$(mktemp -d)
pid=""
cleanup() {
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then kill -KILL "$pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

$GO build -o "$tmp/marlin" ./tools/marlin
"$tmp/marlin" serve --dir "$tmp/data" --listen "127.0.0.1:$PORT" 2>"$tmp/serve.log" &
pid=$!
for i in $(seq 100); do
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "test-gomemcache: marlin serve exited at start:" >&2
    cat "$tmp/serve.log" >&2
    exit 1
  fi
  listening 127.0.0.1 && break
  [ "$i" = 100 ] && { echo "test-gomemcache: marlin serve did not listen on 127.0.0.1:$PORT within 10 s" >&2; cat "$tmp/serve.log" >&2; exit 1; }
  sleep 0.1
done
# It is marlin that answers (memcached would not report marlin_index_bytes).
exec 3<>"/dev/tcp/127.0.0.1/$PORT"
printf 'stats\r\nquit\r\n' >&3
if ! timeout 5 grep -q '^STAT marlin_index_bytes ' <&3; then
  echo "test-gomemcache: the server on 127.0.0.1:$PORT is not marlin serve" >&2
  exit 1
fi
exec 3<&-

echo "== gomemcache $($GO list -m -f '{{.Version}}' github.com/bradfitz/gomemcache): TestLocalhost against marlin serve on 127.0.0.1:$PORT"
status=0
$GO test -count=1 -v -timeout 2m -run '^TestLocalhost$' "$PKG" >"$tmp/test.log" 2>&1 || status=$?
cat "$tmp/test.log"

kill -TERM "$pid"
serve_status=0
wait "$pid" || serve_status=$?
pid=""

if [ "$status" != 0 ] || ! grep -q '^--- PASS: TestLocalhost ' "$tmp/test.log"; then
  if grep -q '^--- SKIP: TestLocalhost' "$tmp/test.log"; then
    echo "test-gomemcache: TestLocalhost was SKIPPED (it found no server): that is a failure here" >&2
  fi
  echo "test-gomemcache: FAILED" >&2
  cat "$tmp/serve.log" >&2
  exit 1
fi
if [ "$serve_status" != 0 ]; then
  echo "test-gomemcache: marlin serve exited with status $serve_status after SIGTERM" >&2
  cat "$tmp/serve.log" >&2
  exit 1
fi
echo "test-gomemcache: TestLocalhost passed against marlin serve"

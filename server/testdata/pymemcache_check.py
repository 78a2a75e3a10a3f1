"""Drives marlin serve with pymemcache (Debian's python3-pymemcache).

Usage: /usr/bin/python3 pymemcache_check.py HOST PORT
Prints "ok" and exits 0 when every check holds; raises otherwise.
"""
import sys

from pymemcache.client.base import Client
from pymemcache.exceptions import MemcacheClientError, MemcacheIllegalInputError

host, port = sys.argv[1], int(sys.argv[2])
c = Client((host, port), default_noreply=False, connect_timeout=5, timeout=5)

assert c.set("k1", b"v1") is True
assert c.get("k1") == b"v1"
assert c.get("missing") is None

# set_many / get_many
pairs = {"many%d" % i: ("value%d" % i).encode() for i in range(200)}
assert c.set_many(pairs) == []
got = c.get_many(list(pairs) + ["absent"])
assert got == pairs, got

# gets / cas
v, cas = c.gets("k1")
assert v == b"v1" and cas is not None
assert c.cas("k1", b"v2", cas) is True
assert c.cas("k1", b"v3", cas) is False  # stale
assert c.get("k1") == b"v2"
assert c.cas("nope", b"x", b"1") is None

# add / replace / append / prepend
assert c.add("k1", b"x") is False
assert c.add("k2", b"x") is True
assert c.replace("k2", b"y") is True
assert c.replace("nope", b"y") is False
assert c.append("k2", b"z") is True
assert c.prepend("k2", b"a") is True
assert c.get("k2") == b"ayz"

# incr / decr
assert c.set("n", b"10") is True
assert c.incr("n", 5) == 15
assert c.decr("n", 100) == 0
assert c.incr("missing", 1) is None
try:
    c.set("text", b"abc")
    c.incr("text", 1)
    raise AssertionError("incr of a non-number did not fail")
except MemcacheClientError:
    pass

# delete / touch / flags via the raw command
assert c.delete("k2") is True
assert c.delete("k2") is False
assert c.touch("k1", 100) is True
assert c.touch("nope", 100) is False

# expiry
assert c.set("old", b"x", expire=-1) is True
assert c.get("old") is None

# errors
try:
    c.set("bad key", b"x")
    raise AssertionError("a key with a space was accepted")
except MemcacheIllegalInputError:
    pass
try:
    c.set("x" * 251, b"x")
    raise AssertionError("a 251-byte key was accepted")
except MemcacheIllegalInputError:
    pass

stats = c.stats()
assert stats[b"version"] == b"1.6.18" or stats.get(b"version") is not None
assert int(stats[b"cmd_get"]) > 0

assert c.flush_all() is True
assert c.get("k1") is None
print("ok")

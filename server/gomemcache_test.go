package server

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/bradfitz/gomemcache/memcache"
	"github.com/stretchr/testify/require"
)

// gomemcache (github.com/bradfitz/gomemcache), a widely used Go client,
// against the server and against memcached: each case runs client calls
// and describes what they returned; both servers must give the table's
// description. (make test-gomemcache also runs gomemcache's own test
// suite, TestLocalhost, against marlin serve: server/testdata/gomemcache.sh.)

// gmCase is one case: run returns a description of the client's results.
// Its keys start with the case's name, so cases do not meet.
type gmCase struct {
	name string
	run  func(t *testing.T, c *memcache.Client, k func(string) string) string
	want string
	slow bool // waits for an expiry: skipped by -short
}

// gmErr names an error the client returns.
func gmErr(err error) string {
	switch {
	case err == nil:
		return "ok"
	case errors.Is(err, memcache.ErrCacheMiss):
		return "miss"
	case errors.Is(err, memcache.ErrNotStored):
		return "not-stored"
	case errors.Is(err, memcache.ErrCASConflict):
		return "cas-conflict"
	case errors.Is(err, memcache.ErrMalformedKey):
		return "malformed-key"
	}
	return err.Error()
}

// gmGet describes a get: its value and flags, or its error.
func gmGet(c *memcache.Client, key string) string {
	it, err := c.Get(key)
	if err != nil {
		return gmErr(err)
	}
	return fmt.Sprintf("%q/%d", it.Value, it.Flags)
}

func gmSet(t *testing.T, c *memcache.Client, it *memcache.Item) {
	t.Helper()
	require.NoError(t, c.Set(it))
}

var gomemcacheCases = []gmCase{
	{name: "set-get-flags", want: `ok "v1"/42 ok "v2"/0 ok ""/4294967295`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			e1 := c.Set(&memcache.Item{Key: k("a"), Value: []byte("v1"), Flags: 42})
			g1 := gmGet(c, k("a"))
			e2 := c.Set(&memcache.Item{Key: k("a"), Value: []byte("v2")})
			g2 := gmGet(c, k("a"))
			e3 := c.Set(&memcache.Item{Key: k("empty"), Value: nil, Flags: 1<<32 - 1})
			return fmt.Sprint(gmErr(e1), " ", g1, " ", gmErr(e2), " ", g2, " ", gmErr(e3), " ", gmGet(c, k("empty")))
		}},
	{name: "get-miss", want: "miss",
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string { return gmGet(c, k("nope")) }},
	{name: "binary-value", want: `"\x00\r\n\xffEND\r\n"/7`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			gmSet(t, c, &memcache.Item{Key: k("b"), Value: []byte("\x00\r\n\xffEND\r\n"), Flags: 7})
			return gmGet(c, k("b"))
		}},
	{name: "add-replace", want: `ok not-stored not-stored ok "r"/3`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			e1 := c.Add(&memcache.Item{Key: k("a"), Value: []byte("x")})
			e2 := c.Add(&memcache.Item{Key: k("a"), Value: []byte("y")})
			e3 := c.Replace(&memcache.Item{Key: k("nope"), Value: []byte("z")})
			e4 := c.Replace(&memcache.Item{Key: k("a"), Value: []byte("r"), Flags: 3})
			return fmt.Sprint(gmErr(e1), " ", gmErr(e2), " ", gmErr(e3), " ", gmErr(e4), " ", gmGet(c, k("a")))
		}},
	{name: "append-prepend", want: `not-stored not-stored ok ok "<mid>"/9`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			e1 := c.Append(&memcache.Item{Key: k("a"), Value: []byte(">")})
			e2 := c.Prepend(&memcache.Item{Key: k("a"), Value: []byte("<")})
			gmSet(t, c, &memcache.Item{Key: k("a"), Value: []byte("mid"), Flags: 9})
			// The item keeps its flags: those sent with append are ignored.
			e3 := c.Append(&memcache.Item{Key: k("a"), Value: []byte(">"), Flags: 1})
			e4 := c.Prepend(&memcache.Item{Key: k("a"), Value: []byte("<")})
			return fmt.Sprint(gmErr(e1), " ", gmErr(e2), " ", gmErr(e3), " ", gmErr(e4), " ", gmGet(c, k("a")))
		}},
	{name: "gets-cas", want: `cas-set ok stale cas-conflict "new"/5 touch-keeps-cas true deleted miss`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			gmSet(t, c, &memcache.Item{Key: k("a"), Value: []byte("old"), Flags: 5})
			it, err := c.Get(k("a"))
			require.NoError(t, err)
			stale := *it
			out := []string{map[bool]string{true: "cas-set", false: "cas-zero"}[it.CasID != 0]}
			it.Value = []byte("new")
			out = append(out, gmErr(c.CompareAndSwap(it)))
			stale.Value = []byte("lost")
			out = append(out, "stale", gmErr(c.CompareAndSwap(&stale)), gmGet(c, k("a")))
			before, err := c.Get(k("a"))
			require.NoError(t, err)
			require.NoError(t, c.Touch(k("a"), 100))
			after, err := c.Get(k("a"))
			require.NoError(t, err)
			out = append(out, "touch-keeps-cas", fmt.Sprint(before.CasID == after.CasID))
			require.NoError(t, c.Delete(k("a")))
			out = append(out, "deleted", gmErr(c.CompareAndSwap(after)))
			return strings.Join(out, " ")
		}},
	{name: "incr-decr", want: `15 ok 0 ok "0 "/0 miss miss memcache: client error: cannot increment or decrement non-numeric value 1 ok 1 ok "18446744073709551615"/0`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			var out []string
			num := func(n uint64, err error) {
				out = append(out, fmt.Sprint(n), gmErr(err))
			}
			gmSet(t, c, &memcache.Item{Key: k("n"), Value: []byte("10")})
			num(c.Increment(k("n"), 5))
			num(c.Decrement(k("n"), 20)) // stops at 0
			// A shorter number is padded with spaces to the old length.
			out = append(out, gmGet(c, k("n")))
			_, err := c.Increment(k("nope"), 1)
			out = append(out, gmErr(err))
			_, err = c.Decrement(k("nope"), 1)
			out = append(out, gmErr(err))
			gmSet(t, c, &memcache.Item{Key: k("s"), Value: []byte("abc")})
			_, err = c.Increment(k("s"), 1)
			out = append(out, gmErr(err))
			gmSet(t, c, &memcache.Item{Key: k("w"), Value: []byte("18446744073709551615")})
			num(c.Increment(k("w"), 2)) // wraps at 2^64
			num(c.Decrement(k("w"), 0))
			gmSet(t, c, &memcache.Item{Key: k("big"), Value: []byte("18446744073709551614")})
			_, err = c.Increment(k("big"), 1)
			require.NoError(t, err)
			out = append(out, gmGet(c, k("big")))
			return strings.Join(out, " ")
		}},
	{name: "touch-delete", want: `miss ok ok miss miss ok`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			e1 := c.Touch(k("nope"), 10)
			gmSet(t, c, &memcache.Item{Key: k("a"), Value: []byte("x")})
			e2 := c.Touch(k("a"), 10)
			e3 := c.Delete(k("a"))
			e4 := c.Delete(k("a"))
			return fmt.Sprint(gmErr(e1), " ", gmErr(e2), " ", gmErr(e3), " ", gmErr(e4), " ", gmGet(c, k("a")), " ", gmErr(c.Ping()))
		}},
	{name: "get-multi", want: `a="1"/1 b="22"/2 c="333"/3`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			for i, n := range []string{"a", "b", "c"} {
				gmSet(t, c, &memcache.Item{Key: k(n), Value: []byte(strings.Repeat(fmt.Sprint(i+1), i+1)), Flags: uint32(i + 1)})
			}
			m, err := c.GetMulti([]string{k("a"), k("nope"), k("b"), k("c"), k("nope2")})
			require.NoError(t, err)
			var out []string
			for key, it := range m {
				require.Equal(t, key, it.Key)
				out = append(out, fmt.Sprintf("%s=%q/%d", strings.TrimPrefix(key, k("")), it.Value, it.Flags))
			}
			sort.Strings(out)
			return strings.Join(out, " ")
		}},
	{name: "get-multi-many", want: "500 found, values right",
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			var keys []string
			for i := range 500 {
				keys = append(keys, k(fmt.Sprint(i)))
				gmSet(t, c, &memcache.Item{Key: keys[i], Value: []byte(strings.Repeat("v", i))})
			}
			m, err := c.GetMulti(keys)
			require.NoError(t, err)
			for i, key := range keys {
				if it := m[key]; it == nil || string(it.Value) != strings.Repeat("v", i) {
					return "wrong value for " + key
				}
			}
			return fmt.Sprintf("%d found, values right", len(m))
		}},
	{name: "gat", want: `miss "x"/8`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			_, err := c.GetAndTouch(k("nope"), 10)
			gmSet(t, c, &memcache.Item{Key: k("a"), Value: []byte("x"), Flags: 8})
			it, err2 := c.GetAndTouch(k("a"), 100)
			require.NoError(t, err2)
			return fmt.Sprintf("%s %q/%d", gmErr(err), it.Value, it.Flags)
		}},
	{name: "expired-at-once", want: `ok miss ok miss`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			// A negative exptime, or a Unix time already past.
			e1 := c.Set(&memcache.Item{Key: k("neg"), Value: []byte("x"), Expiration: -1})
			g1 := gmGet(c, k("neg"))
			e2 := c.Set(&memcache.Item{Key: k("past"), Value: []byte("x"), Expiration: int32(time.Now().Unix() - 10)})
			return fmt.Sprint(gmErr(e1), " ", g1, " ", gmErr(e2), " ", gmGet(c, k("past")))
		}},
	{name: "expiry", slow: true, want: `"x"/0 "y"/0 "z"/0 miss "y"/0 miss`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			gmSet(t, c, &memcache.Item{Key: k("ttl"), Value: []byte("x"), Expiration: 1})
			gmSet(t, c, &memcache.Item{Key: k("long"), Value: []byte("y"), Expiration: 100})
			gmSet(t, c, &memcache.Item{Key: k("touched"), Value: []byte("z"), Expiration: 100})
			before := gmGet(c, k("ttl")) + " " + gmGet(c, k("long")) + " " + gmGet(c, k("touched"))
			require.NoError(t, c.Touch(k("touched"), 1))
			// memcached's clock ticks in whole seconds: a 1 s TTL ends
			// within 2 s.
			time.Sleep(2100 * time.Millisecond)
			return before + " " + gmGet(c, k("ttl")) + " " + gmGet(c, k("long")) + " " + gmGet(c, k("touched"))
		}},
	{name: "large-values", want: `ok 524288 memcache: unexpected response line from "set": "SERVER_ERROR object too large for cache\r\n" miss`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			e1 := c.Set(&memcache.Item{Key: k("half"), Value: make([]byte, 512<<10)})
			it, err := c.Get(k("half"))
			require.NoError(t, err)
			e2 := c.Set(&memcache.Item{Key: k("two"), Value: make([]byte, 2<<20)})
			return fmt.Sprint(gmErr(e1), " ", len(it.Value), " ", gmErr(e2), " ", gmGet(c, k("two")))
		}},
	{name: "malformed-keys", want: `malformed-key malformed-key malformed-key ok`,
		run: func(t *testing.T, c *memcache.Client, k func(string) string) string {
			// The client refuses these itself; the connection stays usable.
			e1 := c.Set(&memcache.Item{Key: "a b", Value: []byte("x")})
			e2 := c.Set(&memcache.Item{Key: strings.Repeat("k", 251), Value: []byte("x")})
			_, e3 := c.Get("a\x7f")
			e4 := c.Set(&memcache.Item{Key: k(strings.Repeat("k", 200)), Value: []byte("x")})
			return fmt.Sprint(gmErr(e1), " ", gmErr(e2), " ", gmErr(e3), " ", gmErr(e4))
		}},
}

// TestGomemcache runs gomemcacheCases against the server and memcached
// (which checks the table), then flush_all through the client.
func TestGomemcache(t *testing.T) {
	servers := map[string]func(t *testing.T) string{
		"marlin": func(t *testing.T) string {
			addr, _, _ := startServer(t, "", Config{})
			return addr
		},
		"memcached": startMemcached,
	}
	for _, name := range []string{"marlin", "memcached"} {
		t.Run(name, func(t *testing.T) {
			addr := servers[name](t)
			c := memcache.New(addr)
			c.Timeout = 5 * time.Second
			defer c.Close()
			for _, tc := range gomemcacheCases {
				t.Run(tc.name, func(t *testing.T) {
					if tc.slow && testing.Short() {
						t.Skip("waits for an expiry; not in -short")
					}
					k := func(s string) string { return tc.name + ":" + s }
					require.Equal(t, tc.want, tc.run(t, c, k))
				})
			}
			gmSet(t, c, &memcache.Item{Key: "flushed", Value: []byte("x")})
			require.NoError(t, c.DeleteAll())
			require.Equal(t, "miss", gmGet(c, "flushed"))
			require.Equal(t, "ok", gmErr(c.Ping()))
		})
	}
}

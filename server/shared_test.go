package server

import (
	"context"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
)

// statInt returns a "stats" figure as a number.
func statInt(t *testing.T, addr, name string) int64 {
	t.Helper()
	v, err := strconv.ParseInt(statValue(t, addr, name), 10, 64)
	require.NoError(t, err)
	return v
}

// TestSharedValues: with shared values, two keys set to the same data
// store it once (each keeps its own flags and CAS); deleting one keeps
// it for the other; deleting the other reclaims it.
func TestSharedValues(t *testing.T) {
	dir := t.TempDir()
	addr, s, db, _ := openServer(t, dir, Config{SharedValues: true})
	data := strings.Repeat("0123456789abcdef", 128) // 2 KiB
	require.Equal(t, "STORED\r\nSTORED\r\n",
		exchange(t, addr, "set a 1 0 2048\r\n"+data+"\r\nset b 2 0 2048\r\n"+data+"\r\n"))
	stat := func(name string) int64 { return statInt(t, addr, name) }
	require.Equal(t, int64(1), stat("shared_values"))
	require.Equal(t, int64(2), stat("shared_refs"))
	require.Equal(t, int64(2048), stat("shared_stored_bytes"))
	require.Equal(t, int64(2048), stat("shared_bytes_saved"))
	require.Equal(t, int64(2), stat("curr_items"))
	got := exchange(t, addr, "gets a b\r\n")
	m := regexp.MustCompile(`VALUE a 1 2048 (\d+)\r\n` + data + `\r\nVALUE b 2 2048 (\d+)\r\n` + data + `\r\nEND\r\n`).FindStringSubmatch(got)
	require.NotNil(t, m, "%.200q", got)
	require.NotEqual(t, m[1], m[2], "each key has its own CAS")

	// A touch and a cas keep the data shared; an append makes new data.
	require.Equal(t, "TOUCHED\r\nSTORED\r\n", exchange(t, addr, "touch a 1000\r\ncas b 9 0 2048 "+m[2]+"\r\n"+data+"\r\n"))
	require.Equal(t, int64(1), stat("shared_values"))
	require.Equal(t, int64(2), stat("shared_refs"))
	require.Equal(t, "STORED\r\nSTORED\r\n", exchange(t, addr, "set c 0 0 2048\r\n"+data+"\r\nappend c 0 0 1\r\n!\r\n"))
	require.Equal(t, int64(2), stat("shared_values"))
	require.Equal(t, "DELETED\r\n", exchange(t, addr, "delete c\r\n"))
	require.Equal(t, int64(1), stat("shared_values"))

	require.Equal(t, "DELETED\r\n", exchange(t, addr, "delete a\r\n"))
	require.Equal(t, int64(1), stat("shared_values"), "b still refers to it")
	require.Equal(t, int64(1), stat("shared_refs"))
	require.Equal(t, "VALUE b 9 2048\r\n"+data+"\r\nEND\r\n", exchange(t, addr, "get a b\r\n"))

	// Across a restart; a server without shared values refuses the
	// database rather than serve its records as items.
	require.NoError(t, s.Shutdown(context.Background()))
	require.NoError(t, db.Close())
	db, err := engine.Open(dir, &engine.Options{Sync: engine.SyncNone, MaxValueSize: 2 << 20})
	require.NoError(t, err)
	_, err = New(db, Config{})
	require.ErrorContains(t, err, "--shared-values")
	require.NoError(t, db.Close())
	addr, _, _ = startServer(t, dir, Config{SharedValues: true})
	require.Equal(t, "VALUE b 9 2048\r\n"+data+"\r\nEND\r\n", exchange(t, addr, "get b\r\n"))
	require.Equal(t, "DELETED\r\n", exchange(t, addr, "delete b\r\n"))
	require.Equal(t, int64(0), statInt(t, addr, "shared_values"))
	require.Equal(t, int64(0), statInt(t, addr, "shared_stored_bytes"))
	require.Equal(t, int64(0), statInt(t, addr, "curr_items"))
}

// TestSharedValuesFlushAll: the sweep after flush_all deletes through
// the store, so the values go with their keys.
func TestSharedValuesFlushAll(t *testing.T) {
	addr, _, _ := startServer(t, "", Config{SharedValues: true})
	data := strings.Repeat("v", 500)
	var in strings.Builder
	for i := range 50 {
		in.WriteString("set k" + strconv.Itoa(i) + " 0 0 500\r\n" + data + "\r\n")
	}
	exchange(t, addr, in.String())
	require.Equal(t, int64(1), statInt(t, addr, "shared_values"))
	require.Equal(t, int64(50), statInt(t, addr, "shared_refs"))
	require.Equal(t, "OK\r\n", exchange(t, addr, "flush_all\r\n"))
	deadline := time.Now().Add(5 * time.Second)
	for statInt(t, addr, "shared_values") != 0 {
		require.True(t, time.Now().Before(deadline), "the sweep did not reclaim the value")
		time.Sleep(10 * time.Millisecond)
	}
	require.Equal(t, int64(0), statInt(t, addr, "shared_refs"))
	require.Equal(t, int64(0), statInt(t, addr, "curr_items"))
}

// TestSharedValuesProtocols: the text, meta and binary exchanges give
// the same answers with shared values, and keys in the store's reserved
// space are no items.
func TestSharedValuesProtocols(t *testing.T) {
	addr, _, _ := startServer(t, "", Config{SharedValues: true})
	for _, c := range textCases {
		t.Run(c.name, func(t *testing.T) {
			exchange(t, addr, "delete k\r\ndelete a\r\ndelete b\r\ndelete n\r\n")
			require.Equal(t, c.want, exchange(t, addr, c.in))
		})
	}
	runMetaCases(t, addr)
	// "\x00shared." in base64: a meta client can name it; it misses.
	require.Equal(t, "EN\r\n", exchange(t, addr, "mg AHNoYXJlZC52 b v\r\n"))

	// The binary protocol, byte for byte as memcached answers (CAS aside).
	mc := startMemcached(t)
	got := binSession(t, addr, binSequence())
	want := binSession(t, mc, binSequence())
	for i := range want {
		require.Equal(t, want[i], got[i], "request %d (opcode %#x)", i, binSequence()[i][1])
	}
}

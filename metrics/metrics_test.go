package metrics

import (
	"encoding/json"
	"expvar"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	"github.com/stretchr/testify/require"

	"github.com/marlinkv/marlin/engine"
)

func openDB(t *testing.T) *engine.DB {
	db, err := engine.Open(t.TempDir(), &engine.Options{Sync: engine.SyncNone})
	require.NoError(t, err)
	for _, k := range []string{"a", "b", "c"} {
		require.NoError(t, db.Put([]byte(k), []byte("v")))
	}
	return db
}

func TestCollector(t *testing.T) {
	db := openDB(t)
	c := NewCollector(db, prometheus.Labels{"db": "test"})
	reg := prometheus.NewPedanticRegistry()
	require.NoError(t, reg.Register(c))
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP marlin_engine_keys Index entries (expired keys not yet reclaimed included).
# TYPE marlin_engine_keys gauge
marlin_engine_keys{db="test"} 3
# HELP marlin_engine_puts_total Puts.
# TYPE marlin_engine_puts_total counter
marlin_engine_puts_total{db="test"} 3
# HELP marlin_engine_up Whether the database answered its Stats call at this scrape (1: the other figures follow) or not (0: closed).
# TYPE marlin_engine_up gauge
marlin_engine_up{db="test"} 1
`), "marlin_engine_keys", "marlin_engine_puts_total", "marlin_engine_up"))
	require.Equal(t, len(Figures())+1, testutil.CollectAndCount(c))

	require.NoError(t, db.Close())
	require.NoError(t, testutil.GatherAndCompare(reg, strings.NewReader(`
# HELP marlin_engine_up Whether the database answered its Stats call at this scrape (1: the other figures follow) or not (0: closed).
# TYPE marlin_engine_up gauge
marlin_engine_up{db="test"} 0
`), "marlin_engine_up"))
}

func TestPublish(t *testing.T) {
	db := openDB(t)
	defer db.Close()
	Publish("marlin_test", db)
	var m map[string]float64
	require.NoError(t, json.Unmarshal([]byte(expvar.Get("marlin_test").String()), &m))
	require.Equal(t, 3.0, m["keys"])
	require.Equal(t, 3.0, m["puts_total"])
	require.Len(t, m, len(Figures()))
	names := map[string]bool{}
	for _, f := range Figures() {
		require.False(t, names[f.Name], "duplicate figure %s", f.Name)
		names[f.Name] = true
		require.NotEmpty(t, f.Help)
	}
}

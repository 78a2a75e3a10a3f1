// Package peers runs Marlin's load-test workload against other embedded
// key-value stores (Pebble, Badger, bbolt, a Go map) so their figures can be
// set side by side. It is a separate module so the engine's own dependency
// list stays short.
//
// Each store runs in its own process (see cmd/peerbench), built with only
// that store linked in: the memory figures are the store's alone.
package peers

import (
	"fmt"
	"slices"
	"sort"
	"time"
)

// Store is the little a workload needs from a key-value store.
type Store interface {
	// WriteBatch writes keys[i] = vals[i] for every i as one batch
	// (atomically where the store can), without an fsync of its own.
	WriteBatch(keys, vals [][]byte) error
	// Get appends key's value to dst; ok is false if the key is absent.
	// Concurrent Gets must be safe.
	Get(dst, key []byte) (v []byte, ok bool, err error)
	// Close makes everything written durable and releases the store.
	Close() error
}

// Settler is implemented by stores that a load leaves with background work
// (LSM trees and their compactions). Settle waits until that work is done,
// or timeout passes, so that the gets measure the store at rest instead of
// its compactions competing for the CPUs; the wait is reported.
type Settler interface {
	Settle(timeout time.Duration) error
}

// Engine describes one store and how it is configured.
type Engine struct {
	Name string
	// Config says how the store is configured, and why, in one line;
	// Short is a few words of it for the table.
	Config, Short string
	// Module is the Go module that provides the store (its version is
	// read from the binary's build information).
	Module string
	// InMemory stores have no files: no disk or restart figures.
	InMemory bool
	// Open opens (creating if needed) a store in dir.
	Open func(dir string) (Store, error)
}

var registry = map[string]Engine{}

// Register makes an engine available to the child processes. Engines with
// dependencies register from files built only with their tag
// (peer_NAME, or peer_all for every one).
func Register(e Engine) {
	if _, dup := registry[e.Name]; dup {
		panic(fmt.Sprintf("peers: engine %q registered twice", e.Name))
	}
	registry[e.Name] = e
}

// Lookup returns the engine called name, if it is built in.
func Lookup(name string) (Engine, bool) {
	e, ok := registry[name]
	return e, ok
}

// BuiltIn returns the names of the engines built into this binary.
func BuiltIn() []string {
	names := make([]string, 0, len(registry))
	for n := range registry {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// All lists every engine the peers module knows, in table order.
var All = []string{"marlin", "pebble", "badger", "bbolt", "map"}

// Known reports whether name is one of All.
func Known(name string) bool { return slices.Contains(All, name) }

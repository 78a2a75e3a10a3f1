package engine_test

import (
	"errors"
	"fmt"
	"log"
	"os"
	"path/filepath"
	"time"

	"github.com/marlinkv/marlin/bundle"
	"github.com/marlinkv/marlin/engine"
)

// tempDir returns a new directory for an example (removed by cleanup).
func tempDir() (string, func()) {
	dir, err := os.MkdirTemp("", "marlin-example-")
	if err != nil {
		log.Fatal(err)
	}
	return dir, func() { os.RemoveAll(dir) }
}

func ExampleOpen() {
	dir, cleanup := tempDir()
	defer cleanup()

	db, err := engine.Open(filepath.Join(dir, "db"), nil) // nil: the defaults (group commit)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	if err := db.Put([]byte("user:42"), []byte(`{"name":"ada"}`)); err != nil {
		log.Fatal(err)
	}
	v, err := db.Get([]byte("user:42"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println(string(v))
	_, err = db.Get([]byte("user:43"))
	fmt.Println(errors.Is(err, engine.ErrNotFound))
	// Output:
	// {"name":"ada"}
	// true
}

func ExampleDB_Write() {
	dir, cleanup := tempDir()
	defer cleanup()
	db, err := engine.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// A batch is applied all or nothing, also across a crash.
	var b engine.Batch
	b.Put([]byte("account:1"), []byte("90"))
	b.Put([]byte("account:2"), []byte("110"))
	b.Delete([]byte("transfer:7"))
	if err := db.Write(&b); err != nil {
		log.Fatal(err)
	}
	v, _ := db.Get([]byte("account:2"))
	fmt.Println(string(v))
	// Output: 110
}

func ExampleDB_PutTTL() {
	dir, cleanup := tempDir()
	defer cleanup()
	db, err := engine.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	if err := db.PutTTL([]byte("session:9f2"), []byte("cart=3"), 30*time.Minute); err != nil {
		log.Fatal(err)
	}
	exp, _ := db.Expiry([]byte("session:9f2"))
	fmt.Println(time.Until(exp).Round(time.Minute))
	// Output: 30m0s
}

func ExampleDB_View() {
	dir, cleanup := tempDir()
	defer cleanup()
	db, err := engine.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	_ = db.Put([]byte("k"), []byte("a value read without a copy"))

	// The slice belongs to the database and is valid only inside fn.
	err = db.View([]byte("k"), func(v []byte) error {
		fmt.Println(len(v), string(v[:7]))
		return nil
	})
	if err != nil {
		log.Fatal(err)
	}
	// Output: 27 a value
}

func ExampleDB_All() {
	dir, cleanup := tempDir()
	defer cleanup()
	db, err := engine.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	for _, k := range []string{"a", "b", "c"} {
		_ = db.Put([]byte(k), []byte("v"+k))
	}

	// Log order, not key order; one sequential pass over the files.
	n := 0
	var iterErr error
	for _, v := range db.All(&iterErr) {
		n += len(v)
	}
	if iterErr != nil {
		log.Fatal(iterErr)
	}
	fmt.Println(n)
	// Output: 6
}

func ExampleDB_Checkpoint() {
	dir, cleanup := tempDir()
	defer cleanup()
	db, err := engine.Open(filepath.Join(dir, "db"), nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	_ = db.Put([]byte("k"), []byte("v"))

	// A consistent copy of a live database; it opens on its own.
	if err := db.Checkpoint(filepath.Join(dir, "backup")); err != nil {
		log.Fatal(err)
	}
	cp, err := engine.Open(filepath.Join(dir, "backup"), &engine.Options{ReadOnly: true})
	if err != nil {
		log.Fatal(err)
	}
	defer cp.Close()
	v, _ := cp.Get([]byte("k"))
	fmt.Println(string(v))
	// Output: v
}

func ExampleDB_Update() {
	dir, cleanup := tempDir()
	defer cleanup()
	db, err := engine.Open(dir, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()

	// add: store only if absent, with no other write in between.
	add := func(key, value string) bool {
		seq, err := db.Update([]byte(key), func(_ []byte, _ engine.Item, found bool, _ uint64) (engine.Change, error) {
			if found {
				return engine.Change{Op: engine.Keep}, nil
			}
			return engine.Change{Op: engine.Set, Value: []byte(value)}, nil
		})
		if err != nil {
			log.Fatal(err)
		}
		return seq != 0
	}
	fmt.Println(add("lock:job", "worker-1"), add("lock:job", "worker-2"))
	// Output: true false
}

// A database over a base bundle: reads fall through to the bundle, writes
// and deletes go on top, and Fold rebuilds the base from both.
func ExampleDB_Fold() {
	dir, cleanup := tempDir()
	defer cleanup()
	// A bundle of the slowly changing data, built once (marlin bundle build).
	base := filepath.Join(dir, "products.bundle")
	b, err := bundle.NewBuilder(nil, base, nil)
	if err != nil {
		log.Fatal(err)
	}
	for _, k := range []string{"apple", "pear", "plum"} {
		if err := b.Add([]byte(k), []byte("in stock")); err != nil {
			log.Fatal(err)
		}
	}
	if err := b.Finish(); err != nil {
		log.Fatal(err)
	}

	db, err := engine.Open(filepath.Join(dir, "db"), &engine.Options{Base: base})
	if err != nil {
		log.Fatal(err)
	}
	defer db.Close()
	_ = db.Put([]byte("pear"), []byte("sold out")) // the delta overrides the base
	_ = db.Delete([]byte("plum"))                  // a mask hides the base's plum
	show := func() {
		for _, k := range []string{"apple", "pear", "plum"} {
			v, err := db.Get([]byte(k))
			fmt.Printf("%s: %s %v\n", k, v, err)
		}
	}
	show()
	st, err := db.Fold(nil) // a new base holding the merged view; the delta empties
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("new base:", st.Pairs, "pairs;", st.Dropped, "delta entries dropped")
	show()
	// Output:
	// apple: in stock <nil>
	// pear: sold out <nil>
	// plum:  marlin: key not found
	// new base: 2 pairs; 2 delta entries dropped
	// apple: in stock <nil>
	// pear: sold out <nil>
	// plum:  marlin: key not found
}

package bundle_test

import (
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/marlinkv/marlin/bundle"
)

// Build a bundle once, then open it (read-only, shared through the page
// cache by every process that opens it) and look keys up.
func Example() {
	dir, err := os.MkdirTemp("", "bundle-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	path := filepath.Join(dir, "urls.bundle")

	b, err := bundle.NewBuilder(nil, path, &bundle.BuildOptions{MemoryLimit: 64 << 20})
	if err != nil {
		log.Fatal(err)
	}
	for i := range 1000 {
		if err := b.Add(fmt.Appendf(nil, "https://example.com/%d", i), fmt.Appendf(nil, "category-%d", i%7)); err != nil {
			log.Fatal(err)
		}
	}
	if err := b.Finish(); err != nil { // written to a temporary name, fsynced, renamed
		log.Fatal(err)
	}

	r, err := bundle.Open(nil, path, nil)
	if err != nil {
		log.Fatal(err)
	}
	defer r.Close()
	v, err := r.Get([]byte("https://example.com/42")) // v points into the mapping until Close
	fmt.Println(string(v), err)
	_, err = r.Get([]byte("https://example.com/missing"))
	fmt.Println(err)
	fmt.Println(r.Len(), "pairs")
	// Output:
	// category-0 <nil>
	// bundle: key not found
	// 1000 pairs
}

package vfs

import (
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// TestResidentOS checks mincore through Mapping.Resident: pages just
// written are resident; after the file's pages are dropped from the page
// cache (fadvise DONTNEED on synced, clean pages) they are not, until read.
func TestResidentOS(t *testing.T) {
	name := filepath.Join(t.TempDir(), "f")
	f, err := Default.Create(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	data := make([]byte, 5*pageSize)
	for i := range data {
		data[i] = byte(i)
	}
	if _, err := f.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	m, err := f.Map(len(data))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if err := m.Advise(AccessRandom); err != nil {
		t.Fatal(err)
	}
	if ok, err := m.Resident(pageSize-3, 10); err != nil || !ok {
		t.Fatalf("Resident after write = %v, %v; want true", ok, err)
	}
	dropCache(t, name)
	if ok, err := m.Resident(pageSize-3, 10); err != nil || ok {
		t.Fatalf("Resident after dropping the cache = %v, %v; want false", ok, err)
	}
	sink = m.Bytes()[2*pageSize] // faults page 2 in (only it: MADV_RANDOM)
	if ok, err := m.Resident(2*pageSize+1, 100); err != nil || !ok {
		t.Fatalf("Resident of a page just read = %v, %v; want true", ok, err)
	}
	if _, err := m.Resident(len(data)-1, 2); err == nil {
		t.Fatal("Resident past the view's end did not fail")
	}
}

var sink byte

func dropCache(t *testing.T, name string) {
	t.Helper()
	f, err := os.Open(name)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Skipf("fadvise: %v", err)
	}
}

func TestResidentMem(t *testing.T) {
	fs := NewMem()
	f, err := fs.Create("f")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(make([]byte, 100)); err != nil {
		t.Fatal(err)
	}
	m, err := f.Map(100)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := m.Resident(0, 100); err != nil || !ok {
		t.Fatalf("mem Resident = %v, %v", ok, err)
	}
	if err := m.Advise(AccessRandom); err != nil {
		t.Fatal(err)
	}
}

func BenchmarkResident(b *testing.B) {
	name := filepath.Join(b.TempDir(), "f")
	f, err := Default.Create(name)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write(make([]byte, 1<<20)); err != nil {
		b.Fatal(err)
	}
	m, err := f.Map(1 << 20)
	if err != nil {
		b.Fatal(err)
	}
	defer m.Close()
	b.RunParallel(func(pb *testing.PB) {
		i := 0
		for pb.Next() {
			if ok, err := m.Resident((i*4099)%(1<<20-64), 64); err != nil || !ok {
				b.Fatal(ok, err)
			}
			i++
		}
	})
}

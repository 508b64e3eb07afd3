package store

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// BenchmarkViews measures the property index against the catalog size:
// with N images in the catalog, ViewImages of a value 10 images have
// (by-property/os_distro/superos/), against the full scan it replaces
// (ListFor and a property comparison on every record). Run with make
// bench, or:
//
//	go test -run '^$' -bench Views -benchtime 2s ./store/
//
// Building a catalog of 100,000 images through the store API (two synced
// commits per image) takes a minute or two; with IMAGEFS_BENCH_DIR set the
// catalogs are kept there and reused by later runs.
func BenchmarkViews(b *testing.B) {
	for _, n := range []int{1_000, 100_000} {
		s := benchCatalog(b, "store", n)
		b.Run(fmt.Sprintf("images=%d/ViewImages-10-matches", n), func(b *testing.B) {
			for b.Loop() {
				ims, err := s.ViewImages(Root, "os_distro", "superos")
				if err != nil || len(ims) != 10 {
					b.Fatalf("ViewImages: %d images, %v", len(ims), err)
				}
			}
		})
		b.Run(fmt.Sprintf("images=%d/ViewImages-10-matches-as-user", n), func(b *testing.B) {
			for b.Loop() {
				ims, err := s.ViewImages(alice, "os_distro", "superos")
				if err != nil || len(ims) != 10 {
					b.Fatalf("ViewImages: %d images, %v", len(ims), err)
				}
			}
		})
		b.Run(fmt.Sprintf("images=%d/full-scan-10-matches", n), func(b *testing.B) {
			for b.Loop() {
				found := 0
				for _, im := range s.ListFor(Root) {
					if v, ok := im.Property("os_distro"); ok && v == "superos" {
						found++
					}
				}
				if found != 10 {
					b.Fatalf("scan found %d", found)
				}
			}
		})
		b.Run(fmt.Sprintf("images=%d/ViewValues-os_distro", n), func(b *testing.B) {
			for b.Loop() {
				if vs, err := s.ViewValues(Root, "os_distro", nil); err != nil || len(vs) != 101 {
					b.Fatalf("ViewValues: %d values, %v", len(vs), err)
				}
			}
		})
		b.Run(fmt.Sprintf("images=%d/ViewKeys", n), func(b *testing.B) {
			for b.Loop() {
				if _, err := s.ViewKeys(Root, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// benchImage describes the benchmark catalogs: image i is
// img-%06d, public, os_distro "superos" for the first 10 and
// "other-<i mod 100>" for the rest.
func benchImage(i int) (name, distro string) {
	name = fmt.Sprintf("img-%06d", i)
	distro = fmt.Sprintf("other-%d", i%100)
	if i < 10 {
		distro = "superos"
	}
	return name, distro
}

// benchCatalog opens a store of n images (see benchImage), building it
// through the store API unless IMAGEFS_BENCH_DIR holds one already.
func benchCatalog(b *testing.B, tag string, n int) *Store {
	b.Helper()
	dir := b.TempDir()
	if root := os.Getenv("IMAGEFS_BENCH_DIR"); root != "" {
		dir = filepath.Join(root, fmt.Sprintf("views-%s-%d-index%s", tag, n, indexVersion))
	}
	done := filepath.Join(dir, "complete")
	s, err := Open(dir, Options{catalogFS: noSyncFS{vfs.Default}})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	// Figures are taken on a compacted catalog: what a catalog settles
	// to, and the same for a fresh build and a reused one.
	defer func() {
		if err := s.CompactCatalog(); err != nil {
			b.Fatal(err)
		}
	}()
	if _, err := os.Stat(done); err == nil {
		return s
	}
	start := time.Now()
	for i := len(s.List()); i < n; i++ {
		name, distro := benchImage(i)
		im, err := s.Create(Root, name)
		if err != nil {
			b.Fatal(err)
		}
		if err := s.SetProperty(Root, im.ID, "os_distro", distro, SetAny); err != nil {
			b.Fatal(err)
		}
		if err := s.SetProperty(Root, im.ID, KeyVisibility, "public", SetAny); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("built a catalog of %d images in %v", n, time.Since(start).Round(time.Millisecond))
	return s
}

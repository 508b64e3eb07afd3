package store

import (
	"fmt"
	"testing"
)

// BenchmarkCatalog measures the catalog operations behind the FUSE
// requests (issue #6): the changes, each one synced Pebble commit, on a
// fresh store; the reads on a catalog of 10,000 images (see benchImage;
// kept in IMAGEFS_BENCH_DIR when set). Run with make bench, or:
//
//	go test -run '^$' -bench Catalog ./store/
func BenchmarkCatalog(b *testing.B) {
	b.Run("Create", func(b *testing.B) {
		s := benchStore(b)
		for i := 0; i < b.N; i++ {
			if _, err := s.Create(Root, fmt.Sprintf("c-%d", i)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SetProperty", func(b *testing.B) {
		s := benchStore(b)
		im, err := s.Create(Root, "p")
		if err != nil {
			b.Fatal(err)
		}
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			if err := s.SetProperty(Root, im.ID, "os_distro", fmt.Sprintf("v%d", i%100), SetAny); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("Seal-1MiB", func(b *testing.B) {
		// Upload of a 1 MiB fixed VHD in 1 MiB writes and its seal (checks,
		// hashes, fsync, rename, commit); the image's creation is not timed.
		s := benchStore(b)
		data := fixedVHD(b, 1<<20)
		b.SetBytes(int64(len(data)))
		b.ResetTimer()
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			im, err := s.Create(Root, fmt.Sprintf("s-%d", i))
			if err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
			u, err := s.OpenWrite(Root, im.ID, false)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := u.WriteAt(data, 0); err != nil {
				b.Fatal(err)
			}
			if err := s.EndWriter(u); err != nil {
				b.Fatal(err)
			}
		}
		b.StopTimer()
		if got := s.Lookup(fmt.Sprintf("s-%d", b.N-1)); got == nil || got.Status != StatusActive {
			b.Fatalf("last upload not sealed: %+v", got)
		}
	})

	const n = 10_000
	s := benchCatalog(b, "store", n)
	names := make([]string, 0, n)
	ids := make([]string, 0, n)
	for _, im := range s.List() {
		names, ids = append(names, im.Name), append(ids, im.ID)
	}
	b.Run(fmt.Sprintf("images=%d/LookupFor", n), func(b *testing.B) {
		i := 0
		for b.Loop() {
			if s.LookupFor(alice, names[i%len(names)]) == nil {
				b.Fatal("no image")
			}
			i++
		}
	})
	b.Run(fmt.Sprintf("images=%d/GetFor", n), func(b *testing.B) {
		i := 0
		for b.Loop() {
			if s.GetFor(alice, ids[i%len(ids)]) == nil {
				b.Fatal("no image")
			}
			i++
		}
	})
	b.Run(fmt.Sprintf("images=%d/ListFor", n), func(b *testing.B) {
		for b.Loop() {
			if got := len(s.ListFor(alice)); got != n {
				b.Fatalf("ListFor: %d images", got)
			}
		}
	})
	b.Run(fmt.Sprintf("images=%d/ViewImages-10-matches", n), func(b *testing.B) {
		for b.Loop() {
			if ims, err := s.ViewImages(alice, "os_distro", "superos"); err != nil || len(ims) != 10 {
				b.Fatalf("ViewImages: %d images, %v", len(ims), err)
			}
		}
	})
}

// benchStore opens a fresh store in a temporary directory.
func benchStore(b *testing.B) *Store {
	b.Helper()
	s, err := Open(b.TempDir(), Options{})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { s.Close() })
	return s
}

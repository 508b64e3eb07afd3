package store

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// BenchmarkOpen measures a mount's start on a catalog of 100,000 images
// (the records loaded by parallel range scans, the index checked, the
// quick reconcile). It needs the catalog BenchmarkViews keeps in
// IMAGEFS_BENCH_DIR (run before it), and is skipped without.
func BenchmarkOpen(b *testing.B) {
	const n = 100_000
	root := os.Getenv("IMAGEFS_BENCH_DIR")
	dir := filepath.Join(root, fmt.Sprintf("views-%s-%d-index%s", "store", n, indexVersion))
	if _, err := os.Stat(filepath.Join(dir, "complete")); root == "" || err != nil {
		b.Skip("needs IMAGEFS_BENCH_DIR with the catalog BenchmarkViews builds")
	}
	b.Run(fmt.Sprintf("images=%d", n), func(b *testing.B) {
		for b.Loop() {
			s, err := Open(dir, Options{})
			if err != nil {
				b.Fatal(err)
			}
			if got := len(s.List()); got != n {
				b.Fatalf("%d images", got)
			}
			if err := s.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

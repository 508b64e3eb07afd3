package store

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/store/kv/etcdkv"
)

// TestProfileSharedLoad opens a host's store on an existing etcd catalog
// twice (the first Open lists it, Close writes the snapshot, the second
// Open starts from it) and logs each Open's time and heap; with
// IMAGEFS_PROF_OUT=PREFIX it writes PREFIX.cpu0/1 (a CPU profile of each
// Open) and PREFIX.heap0/1 (the heap after a GC). For performance work
// (BENCHMARKS.md, the shared section), not a test: skipped unless
// IMAGEFS_PROF_EPS (comma-separated endpoints) and IMAGEFS_PROF_NS (the
// namespace, such as the bench's /imagefs-bench/scale-100000/) are set;
// IMAGEFS_PROF_DIR keeps the store (and its snapshot) between runs.
func TestProfileSharedLoad(t *testing.T) {
	eps, ns := os.Getenv("IMAGEFS_PROF_EPS"), os.Getenv("IMAGEFS_PROF_NS")
	if eps == "" {
		t.Skip()
	}
	out := os.Getenv("IMAGEFS_PROF_OUT")
	dir := os.Getenv("IMAGEFS_PROF_DIR")
	if dir == "" {
		dir = t.TempDir()
	}
	for round := 0; round < 2; round++ {
		log := slog.New(slog.NewTextHandler(os.Stderr, nil))
		b, err := etcdkv.Open(context.Background(), etcdkv.Config{Endpoints: strings.Split(eps, ","), Namespace: ns, Logger: log})
		if err != nil {
			t.Fatal(err)
		}
		d, _ := NewLocalData(filepath.Join(dir, "data"))
		var cf *os.File
		if out != "" {
			cf, _ = os.Create(out + ".cpu" + string(rune('0'+round)))
			pprof.StartCPUProfile(cf)
		}
		start := time.Now()
		s, err := Open(filepath.Join(dir, "store"), Options{Catalog: b, Data: d, Host: "prof", Logger: log})
		el := time.Since(start)
		if cf != nil {
			pprof.StopCPUProfile()
			cf.Close()
		}
		if err != nil {
			t.Fatal(err)
		}
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		t.Logf("round %d: open %v; heap inuse %d MiB, sys %d MiB", round, el, ms.HeapInuse>>20, ms.Sys>>20)
		runtime.GC()
		runtime.ReadMemStats(&ms)
		t.Logf("after GC: heap alloc %d MiB inuse %d MiB", ms.HeapAlloc>>20, ms.HeapInuse>>20)
		if out != "" {
			hf, _ := os.Create(out + ".heap" + string(rune('0'+round)))
			pprof.WriteHeapProfile(hf)
			hf.Close()
		}
		debug.FreeOSMemory()
		cs := time.Now()
		s.Close()
		t.Logf("close %v", time.Since(cs))
	}
}

package integration

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/store"
)

// BenchmarkViewsMount compares, with N images in the catalog, a filter
// view (by-property/os_distro/superos/, 10 matches) against what a script
// does without one (grep -l over every image's properties/os_distro) and
// against listing images/, through an imagefs mount and on the same tree
// of small files on the local disk. Run with make bench, or:
//
//	go test -run '^$' -bench ViewsMount -benchtime 3x ./integration/
//
// The catalog is built through the store API (no data uploads): image i
// is img-%06d, public, os_distro "superos" for the first 10 and
// "other-<i mod 100>" for the rest. The local tree is images/<name>/
// properties/<key> with every property of the same records, and
// by-property/os_distro/<value>/<name> symlinks. With IMAGEFS_BENCH_DIR
// set, both are kept there and reused by later runs (building 100,000
// images takes a few minutes).
func BenchmarkViewsMount(b *testing.B) {
	if skipReason != "" {
		b.Skip(skipReason)
	}
	for _, n := range []int{1_000, 100_000} {
		storeDir, local := benchTrees(b, n)
		dir := b.TempDir()
		m := &fsMount{t: b, Store: storeDir, Mnt: filepath.Join(dir, "mnt"), log: filepath.Join(dir, "imagefs.log")}
		if err := os.Mkdir(m.Mnt, 0o755); err != nil {
			b.Fatal(err)
		}
		m.start()
		for _, tree := range []struct{ name, root string }{{"imagefs", m.Mnt}, {"local", local}} {
			prefix := fmt.Sprintf("images=%d/%s/", n, tree.name)
			b.Run(prefix+"readdir-view-10-matches", func(b *testing.B) {
				view := filepath.Join(tree.root, "by-property", "os_distro", "superos")
				for b.Loop() {
					ents, err := os.ReadDir(view)
					if err != nil || len(ents) != 10 {
						b.Fatalf("ReadDir %s: %d entries, %v", view, len(ents), err)
					}
				}
			})
			b.Run(prefix+"ls-images", func(b *testing.B) {
				for b.Loop() {
					r := execCmd("sh", "-c", `ls "$1" | wc -l`, "sh", filepath.Join(tree.root, "images"))
					if r.err != nil || strings.TrimSpace(r.stdout) != fmt.Sprint(n) {
						b.Fatalf("ls images/: %s", r)
					}
				}
			})
			b.Run(prefix+"grep-l-os_distro", func(b *testing.B) {
				// ulimit -s unlimited lifts ARG_MAX for the 100,000 paths
				// the glob expands to.
				script := `ulimit -s unlimited && cd "$1" && grep -l -x superos images/*/properties/os_distro | wc -l`
				for b.Loop() {
					r := execCmd("sh", "-c", script, "sh", tree.root)
					if r.err != nil || strings.TrimSpace(r.stdout) != "10" {
						b.Fatalf("grep -l: %s", r)
					}
				}
			})
		}
		b.Run(fmt.Sprintf("images=%d/imagefs/imagefs-ls-property", n), func(b *testing.B) {
			for b.Loop() {
				r := execCmd(binary, "ls", m.Mnt, "--property", "os_distro=superos", "--json")
				if r.err != nil || strings.Count(r.stdout, `"name"`) != 10 {
					b.Fatalf("imagefs ls: %s", r)
				}
			}
		})
		m.stop()
	}
}

// benchTrees returns a store of n images and the local tree of the same
// records, building them unless IMAGEFS_BENCH_DIR has them.
func benchTrees(b testing.TB, n int) (storeDir, local string) {
	b.Helper()
	root := os.Getenv("IMAGEFS_BENCH_DIR")
	if root == "" {
		root = b.TempDir()
	}
	base := filepath.Join(root, fmt.Sprintf("views-mount-%d", n))
	storeDir, local = filepath.Join(base, "store"), filepath.Join(base, "local")
	done := filepath.Join(base, "complete")
	if _, err := os.Stat(done); err == nil {
		return storeDir, local
	}
	os.RemoveAll(base)
	start := time.Now()
	// The discarding logger: one line per change otherwise.
	st, err := store.Open(storeDir, store.Options{Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	defer st.Close()
	for i := range n {
		name := fmt.Sprintf("img-%06d", i)
		distro := fmt.Sprintf("other-%d", i%100)
		if i < 10 {
			distro = "superos"
		}
		im, err := st.Create(store.Root, name)
		if err != nil {
			b.Fatal(err)
		}
		if err := st.SetProperty(store.Root, im.ID, "os_distro", distro, store.SetAny); err != nil {
			b.Fatal(err)
		}
		if err := st.SetProperty(store.Root, im.ID, store.KeyVisibility, "public", store.SetAny); err != nil {
			b.Fatal(err)
		}
	}
	if err := st.CompactCatalog(); err != nil {
		b.Fatal(err)
	}
	built := time.Since(start)
	start = time.Now()
	for _, im := range st.List() {
		props := filepath.Join(local, "images", im.Name, "properties")
		if err := os.MkdirAll(props, 0o755); err != nil {
			b.Fatal(err)
		}
		for _, k := range im.Keys() {
			v, _ := im.Property(k)
			if err := os.WriteFile(filepath.Join(props, k), []byte(v+"\n"), 0o644); err != nil {
				b.Fatal(err)
			}
		}
		v, _ := im.Property("os_distro")
		view := filepath.Join(local, "by-property", "os_distro", v)
		if err := os.MkdirAll(view, 0o755); err != nil {
			b.Fatal(err)
		}
		if err := os.Symlink("../../../images/"+im.Name, filepath.Join(view, im.Name)); err != nil {
			b.Fatal(err)
		}
	}
	if err := os.WriteFile(done, nil, 0o644); err != nil {
		b.Fatal(err)
	}
	b.Logf("%d images: catalog built in %v, local tree in %v", n, built.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	return storeDir, local
}

package integration

import (
	"context"
	"crypto/md5"
	"crypto/rand"
	"crypto/sha512"
	byteorder "encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store/kv"
	"github.com/imagefs/imagefs/store/kv/pebblekv"
)

// TestMigrate1000 builds a single-host store of 1,000 images with the
// real binary (50 uploaded with cp, the rest created with mkdir; custom
// properties on every tenth), unmounts it, runs imagefs migrate into a
// namespace of its own in the etcd test cluster (scripts/etcd.sh), and
// checks that every record is there as the store had it, with its name,
// the inode sequence and the verified data of the 50 sealed images; a
// second run changes nothing. Then it mounts the migrated catalog with
// the binary (a host of the shared catalog, with a STORE of its own):
// images/ lists the 1,000 images and sealed images read by id equal
// the store's data; imagefs fsck on that host's STORE is refused while it
// is mounted (exit 2), and once unmounted imagefs fsck --verify-data
// finds the catalog and the shared data clean (exit 0).
func TestMigrate1000(t *testing.T) {
	embeddedCatalogOnly(t, "migrate reads a single-host store (its embedded catalog)")
	const total, uploaded = 1000, 50
	eps := testutil.EtcdEndpoints(t)
	m := mount(t)
	vhds := []vhdFixture{makeVHD(t, 2*mib, "dynamic"), makeVHD(t, 1*mib, "fixed")}
	// One shell for the 1,000 mkdirs and property writes (fast), then
	// the uploads with cp.
	sh(t, `M=$1; i=0
while [ $i -lt 1000 ]; do
  mkdir "$M/images/img-$i"
  if [ $((i % 10)) -eq 0 ]; then
    echo "distro-$((i % 3))" > "$M/images/img-$i/properties/os_distro"
    printf 'image %d\n' $i > "$M/images/img-$i/properties/note"
  fi
  i=$((i+1))
done`, m.Mnt)
	for i := range uploaded {
		run(t, "cp", vhds[i%2].Path, filepath.Join(m.Mnt, "images", fmt.Sprintf("img-%d", i*20), "image.vhd"))
	}
	if got := strings.TrimSpace(migrateReadFile(t, filepath.Join(m.Mnt, "images", "img-980", "properties", "status"))); got != "active" {
		t.Fatalf("img-980 is %s after cp", got)
	}
	// The migration's namespace and data directory.
	raw, ns, data, args := migrateTarget(t, eps, m.Store)

	// A mounted store is refused (its catalog is locked), nothing written.
	r := execCmd(binary, args...)
	if r.code != 2 || !strings.Contains(r.stderr, "is the store mounted?") {
		t.Errorf("imagefs migrate on a mounted store: want exit 2 and the reason: %s", r)
	}
	if n := len(migrateEtcdKeys(t, raw, ns)); n != 0 {
		t.Errorf("%d keys written by a refused migration", n)
	}
	m.stop()

	// A dry run verifies and reports, and writes nothing.
	r = execCmd(binary, append(args, "--dry-run")...)
	if r.err != nil {
		t.Fatalf("imagefs migrate --dry-run failed: %s", r)
	}
	if want := fmt.Sprintf("dry run, nothing written: %d images: %d would be migrated, 0 already there, 0 would not be migrated", total, total); !strings.Contains(r.stdout, want) {
		t.Errorf("dry run's summary: want %q in\n%s", want, r.stdout)
	}
	if n := len(migrateEtcdKeys(t, raw, ns)); n != 0 {
		t.Errorf("%d keys written by a dry run", n)
	}
	if ents, _ := os.ReadDir(data); len(ents) != 0 {
		t.Errorf("%d files written by a dry run in %s", len(ents), data)
	}

	start := time.Now()
	r = execCmd(binary, args...)
	t.Logf("imagefs migrate (%s): %s", time.Since(start).Round(time.Millisecond), r)
	if r.err != nil {
		t.Fatalf("imagefs migrate failed: %s", r)
	}
	if want := fmt.Sprintf("%d images: %d migrated, 0 already there, 0 not migrated", total, total); !strings.Contains(r.stdout, want) {
		t.Errorf("summary: want %q in\n%s", want, r.stdout)
	}
	if !strings.Contains(r.stderr, "handled 1000 of 1000 images (100%)") {
		t.Errorf("no final progress line in\n%s", r.stderr)
	}

	src, srcNames, srcSeq := migrateSourceCatalog(t, m.Store)
	if len(src) != total {
		t.Fatalf("the source has %d records, want %d", len(src), total)
	}
	dst := migrateEtcdKeys(t, raw, ns)
	check := func() {
		t.Helper()
		imgs, names := 0, 0
		for k := range dst {
			switch {
			case strings.HasPrefix(k, "img/"):
				imgs++
			case strings.HasPrefix(k, "name/"):
				names++
			}
		}
		if imgs != total || names != total {
			t.Errorf("the catalog has %d records and %d names, want %d of each", imgs, names, total)
		}
		sealed := 0
		for id, rec := range src {
			got, ok := dst["img/"+id]
			if !ok {
				t.Errorf("record %s missing", id)
				continue
			}
			if !migrateJSONEqual(t, rec, got.Value) {
				t.Errorf("record %s differs:\nsource %s\ncatalog %s", id, rec, got.Value)
			}
			var im struct {
				Name, Status, Checksum string
				OSHashValue            string `json:"os_hash_value"`
				Extra                  map[string]string
			}
			json.Unmarshal(rec, &im)
			if got := string(dst["name/"+im.Name].Value); got != id || srcNames[im.Name] != id {
				t.Errorf("name/%s is %q in the catalog, %q in the store, want %s", im.Name, got, srcNames[im.Name], id)
			}
			path := filepath.Join(data, id+".vhd")
			if im.Status != "active" {
				if _, err := os.Stat(path); !os.IsNotExist(err) {
					t.Errorf("%s image %s has a data file: %v", im.Status, id, err)
				}
				continue
			}
			sealed++
			b, err := os.ReadFile(path)
			if err != nil {
				t.Errorf("data of %s: %v", id, err)
				continue
			}
			m5, s5 := md5.Sum(b), sha512.Sum512(b)
			if hex.EncodeToString(m5[:]) != im.Checksum || hex.EncodeToString(s5[:]) != im.OSHashValue {
				t.Errorf("data of %s does not hash to its checksum", id)
			}
		}
		if sealed != uploaded {
			t.Errorf("%d sealed images in the catalog, want %d", sealed, uploaded)
		}
		seq := dst["seq/ino"]
		if len(seq.Value) != 8 || byteorder.BigEndian.Uint64(seq.Value) < srcSeq {
			t.Errorf("seq/ino in the catalog is %x, the store's is %d", seq.Value, srcSeq)
		}
	}
	check()
	var withProps int
	for _, rec := range src {
		if strings.Contains(string(rec), `"os_distro":"distro-`) {
			withProps++
		}
	}
	if withProps != total/10 {
		t.Errorf("%d records with os_distro, want %d", withProps, total/10)
	}

	// Again: everything is there already; nothing changes.
	r = execCmd(binary, args...)
	if r.err != nil {
		t.Fatalf("imagefs migrate again: %s", r)
	}
	if want := fmt.Sprintf("%d images: 0 migrated, %d already there, 0 not migrated", total, total); !strings.Contains(r.stdout, want) {
		t.Errorf("second run's summary: want %q in\n%s", want, r.stdout)
	}
	again := migrateEtcdKeys(t, raw, ns)
	for k, p := range dst {
		if again[k].ModRev != p.ModRev {
			t.Errorf("%s changed by the second run (ModRev %d -> %d)", k, p.ModRev, again[k].ModRev)
		}
	}
	if len(again) != len(dst) {
		t.Errorf("the second run changed the number of keys: %d -> %d", len(dst), len(again))
	}

	// Mount the migrated catalog: this host's STORE is a new directory.
	srcStore, shared := m.Store, args[2:] // --catalog URL --data DIR --config FILE
	m.Store, m.Args = filepath.Join(t.TempDir(), "host"), shared
	m.start()
	ents, err := os.ReadDir(m.images())
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != total {
		t.Errorf("ls images/ on the shared catalog: %d entries, want %d", len(ents), total)
	}
	var ids []string
	for id, rec := range src {
		if strings.Contains(string(rec), `"status":"active"`) {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) != uploaded {
		t.Fatalf("%d active images in the source, want %d", len(ids), uploaded)
	}
	for _, id := range ids[:5] {
		cmp(t, filepath.Join(srcStore, "data", id+".vhd"), m.byID(id, "image.vhd"))
	}
	fsck := append([]string{"fsck", "--verify-data", m.Store}, shared...)
	if r := execCmd(binary, fsck...); r.code != 2 || !strings.Contains(r.stderr, "is the store mounted?") {
		t.Errorf("imagefs fsck on the STORE of a mounted host: want exit 2 and the reason: %s", r)
	}
	m.stop()
	r = execCmd(binary, fsck...)
	t.Logf("imagefs fsck --verify-data on the shared catalog: %s", r)
	if r.code != 0 {
		t.Errorf("imagefs fsck --verify-data on the migrated catalog: want exit 0: %s", r)
	}
	if want := fmt.Sprintf("%d images, %d sealed, %d verified, 0 problems", total, uploaded, uploaded); !strings.Contains(r.stdout, want) {
		t.Errorf("fsck: want %q in\n%s", want, r.stdout)
	}
}

// migrateSourceCatalog reads a single-host store's records (raw JSON by id),
// names and seq/ino from STORE/catalog (not mounted).
func migrateSourceCatalog(t *testing.T, store string) (map[string][]byte, map[string]string, uint64) {
	t.Helper()
	db, err := pebblekv.Open(filepath.Join(store, "catalog"), pebblekv.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	recs, names := map[string][]byte{}, map[string]string{}
	var seq uint64
	_, err = db.Scan(context.Background(), "", "\xff", 0, func(p kv.Pair) error {
		switch {
		case strings.HasPrefix(p.Key, "img/"):
			recs[p.Key[4:]] = append([]byte(nil), p.Value...)
		case strings.HasPrefix(p.Key, "name/"):
			names[p.Key[5:]] = string(p.Value)
		case p.Key == "seq/ino":
			seq = byteorder.BigEndian.Uint64(p.Value)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return recs, names, seq
}

// migrateEtcdKeys returns every key under ns (without it).
func migrateEtcdKeys(t *testing.T, c *clientv3.Client, ns string) map[string]kv.Pair {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	resp, err := c.Get(ctx, ns, clientv3.WithPrefix())
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]kv.Pair{}
	for _, k := range resp.Kvs {
		key := strings.TrimPrefix(string(k.Key), ns)
		out[key] = kv.Pair{Key: key, Value: k.Value, ModRev: k.ModRevision}
	}
	return out
}

func migrateJSONEqual(t *testing.T, a, b []byte) bool {
	t.Helper()
	var x, y any
	if err := json.Unmarshal(a, &x); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(b, &y); err != nil {
		return false
	}
	xb, _ := json.Marshal(x)
	yb, _ := json.Marshal(y)
	return string(xb) == string(yb)
}

func migrateReadFile(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// migrateTarget makes a namespace in the etcd test cluster (removed at the
// test's end), a data directory and a config file naming the namespace,
// and returns a client, the namespace, the data directory and the
// arguments of imagefs migrate for store.
func migrateTarget(t *testing.T, eps []string, store string) (*clientv3.Client, string, string, []string) {
	t.Helper()
	rb := make([]byte, 6)
	rand.Read(rb)
	ns := "/imagefs-test/migrate-" + hex.EncodeToString(rb) + "/"
	raw, err := clientv3.New(clientv3.Config{Endpoints: eps, DialTimeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		raw.Delete(ctx, ns, clientv3.WithPrefix())
		cancel()
		raw.Close()
	})
	dir := t.TempDir()
	data := filepath.Join(dir, "data")
	if err := os.Mkdir(data, 0o700); err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(dir, "etcd.conf")
	if err := os.WriteFile(conf, []byte("[etcd]\nnamespace = "+ns+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	return raw, ns, data, []string{"migrate", store, "--catalog", "etcd://" + strings.Join(eps, ","), "--data", data, "--config", conf}
}

// TestMigrateReportsFailures: an image whose data does not verify (a byte
// flipped on the store's disk) is listed with the reason, nothing of it
// is written, the others are migrated, and the exit status is 1.
func TestMigrateReportsFailures(t *testing.T) {
	embeddedCatalogOnly(t, "migrate reads a single-host store (its embedded catalog)")
	eps := testutil.EtcdEndpoints(t)
	m := mount(t)
	vhd := makeVHD(t, 1*mib, "fixed")
	for _, name := range []string{"good", "rotten"} {
		run(t, "mkdir", filepath.Join(m.Mnt, "images", name))
		run(t, "cp", vhd.Path, filepath.Join(m.Mnt, "images", name, "image.vhd"))
	}
	run(t, "mkdir", filepath.Join(m.Mnt, "images", "empty"))
	id := strings.TrimSpace(migrateReadFile(t, filepath.Join(m.Mnt, "images", "rotten", "properties", "id")))
	m.stop()
	path := filepath.Join(m.Store, "data", id+".vhd")
	run(t, "chmod", "600", path)
	run(t, "dd", "if=/dev/urandom", "of="+path, "bs=1", "count=1", "seek=4096", "conv=notrunc")

	raw, ns, data, args := migrateTarget(t, eps, m.Store)
	r := execCmd(binary, args...)
	if r.code != 1 {
		t.Errorf("imagefs migrate: want exit 1 (an image not migrated): %s", r)
	}
	if want := "not migrated: " + id + " (rotten, active): data-error: the data hashes to md5"; !strings.Contains(r.stdout, want) {
		t.Errorf("want %q in\n%s", want, r.stdout)
	}
	if want := "3 images: 2 migrated, 0 already there, 1 not migrated"; !strings.Contains(r.stdout, want) {
		t.Errorf("want %q in\n%s", want, r.stdout)
	}
	keys := migrateEtcdKeys(t, raw, ns)
	if _, ok := keys["img/"+id]; ok {
		t.Errorf("the record of the image not migrated is in the catalog")
	}
	if _, ok := keys["name/rotten"]; ok {
		t.Errorf("the name of the image not migrated is in the catalog")
	}
	if _, ok := keys["name/good"]; !ok {
		t.Errorf("the good image is not in the catalog")
	}
	ents, _ := filepath.Glob(filepath.Join(data, "*.vhd"))
	if len(ents) != 1 || filepath.Base(ents[0]) == id+".vhd" {
		t.Errorf("the data directory holds %v, want only the good image's data", ents)
	}
	if _, err := os.Stat(filepath.Join(data, ".imagefs-data-id")); err != nil {
		t.Errorf("the data directory's identity file: %v", err)
	}
}

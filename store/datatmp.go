package store

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// Temporary files of a data directory. A seal across filesystems (a
// shared data directory on NFS, staging under the local STORE) copies the
// staged file to DIR/.tmp-<id>@<host>@<random> before renaming it into
// place (localData.copyIn); a crash between the two leaves it. Its host
// removes its own at its next mount (no copy of its can be in progress
// then: the store's lock and the catalog's host claim keep a second
// daemon of one host id away); fsck reports, and with --repair removes,
// those of other hosts and of unknown hosts (older names, a migration's
// DIR/<id>.vhd.migrating, an identity file's temporary) once they have not
// been written for CheckOptions.OrphanGrace: another host's copy in
// progress writes its file all along.

// tempPattern is os.CreateTemp's pattern of copyIn's temporary file of
// image id made by host (host ids and image ids hold no '@').
func tempPattern(id, host string) string { return ".tmp-" + id + "@" + host + "@*" }

// tempHost reports whether name is a temporary file of a data directory,
// and the host that made it ("" when it does not say).
func tempHost(name string) (host string, ok bool) {
	switch {
	case strings.HasPrefix(name, ".tmp-"):
		if parts := strings.Split(name[len(".tmp-"):], "@"); len(parts) == 3 {
			return parts[1], true
		}
		return "", true // .tmp-<id>-<random>: before host names
	case strings.HasSuffix(name, ".vhd.migrating"), strings.HasPrefix(name, dataIDFile+".tmp-"):
		return "", true
	}
	return "", false
}

// checkDataTemps reports the temporary files of the local data
// directory (ProblemDataTemp): this host's always (repair: removed, at
// every mount too), the others' once older than the grace (repair, by
// fsck only: removed).
func (k *checker) checkDataTemps() {
	ld, ok := k.s.data.(*localData)
	if !ok {
		return
	}
	ents, err := os.ReadDir(ld.dir)
	if err != nil {
		return
	}
	for _, e := range ents {
		host, ok := tempHost(e.Name())
		if !ok || e.IsDir() {
			continue
		}
		fi, err := e.Info()
		if err != nil {
			continue // gone meanwhile (renamed into place)
		}
		age := k.s.opts.Now().Sub(fi.ModTime())
		mine := host != "" && host == k.s.opts.Host
		if !mine && (k.opts.quick || age < k.opts.OrphanGrace) {
			continue // another host's copy may be in progress
		}
		who := "host " + host
		if host == "" {
			who = "an unknown host"
		}
		if mine {
			who = "this host (" + host + ")"
		}
		repaired := k.opts.Repair && os.Remove(filepath.Join(ld.dir, e.Name())) == nil
		k.add(ProblemDataTemp, "", fmt.Sprintf("%s: temporary file of a copy into the data directory cut off by a crash (%s, %d bytes, unchanged for %v)",
			filepath.Join(ld.dir, e.Name()), who, fi.Size(), age.Round(1e9)), repaired)
	}
}

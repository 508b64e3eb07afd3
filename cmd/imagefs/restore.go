package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/imagefs/imagefs/store"
	"github.com/spf13/pflag"
)

const restoreHelp = `Usage: imagefs restore [OPTIONS] BACKUP_DIR... MOUNTPOINT

Restore images from backups of their directories into a mounted imagefs.
A backup is a copy of images/NAME/ (or by-id/ID/) made with 'cp -a' or
'rsync -a': BACKUP_DIR/image.vhd (image.raw for a raw image) and
BACKUP_DIR/properties/KEY.

For each BACKUP_DIR, imagefs restore makes the image through the mount
(mkdir MOUNTPOINT/images/NAME, NAME from properties/name unless --name),
sets its disk_format when the backup's is not vhd, uploads the data
file, and compares the new image's checksum (MD5) and
os_hash_value (SHA-512) with the backed-up ones. Then it sets every
property that may be set: custom properties, min_ram, min_disk,
visibility, members (of a shared image; pending again: each member
accepts anew), protected (last), and status deactivated.
System properties (id, checksum, size, created_at, owner, vhd_*, ...) are
made by imagefs: the restored image has a new id, the caller as owner, and
the same data and hashes.

If anything fails (the name is taken, the upload is refused, a checksum
differs, a property cannot be set) the new image is removed again and
nothing is left behind; the other backups are still restored. Only images
whose backed-up status is active or deactivated can be restored (the
others had no sealed data).

Exit status:
  0  every image was restored
  1  at least one could not be (the reason is on stderr)
  2  usage error

Options:
`

const restoreExamples = `
Examples:
  cp -a /mnt/images/images/superos-2024.1 /backup/              # back up
  imagefs restore /backup/superos-2024.1 /mnt/images            # restore
  imagefs restore --name superos-old /backup/superos-2024.1 /mnt/images
  imagefs restore /backup/* /mnt/images
`

func init() {
	register("restore", "restore images from backups of their directories", runRestore)
}

func runRestore(args []string) int {
	fl := pflag.NewFlagSet("restore", pflag.ContinueOnError)
	name := fl.String("name", "", "restore under `NAME` instead of the backed-up name (one BACKUP_DIR only)")
	help := fl.BoolP("help", "h", false, "show this help")
	fl.SetOutput(io.Discard)
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "imagefs restore: "+format+"\n", a...)
		fmt.Fprintf(os.Stderr, "Try 'imagefs restore --help' for more information.\n")
		return 2
	}
	if err := fl.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	if *help {
		fl.SetOutput(os.Stdout)
		fmt.Print(restoreHelp)
		printFlags(os.Stdout, fl)
		fmt.Print(restoreExamples)
		return 0
	}
	if fl.NArg() < 2 {
		return usageErr("want BACKUP_DIR... MOUNTPOINT, got %d arguments", fl.NArg())
	}
	if *name != "" && fl.NArg() != 2 {
		return usageErr("--name needs exactly one BACKUP_DIR")
	}
	mnt := fl.Arg(fl.NArg() - 1)
	if fi, err := os.Stat(filepath.Join(mnt, "images")); err != nil || !fi.IsDir() {
		fmt.Fprintf(os.Stderr, "imagefs restore: %s is not a mounted imagefs (no images/ directory)\n", mnt)
		return 1
	}
	code := 0
	for _, dir := range fl.Args()[:fl.NArg()-1] {
		r, err := restoreImage(dir, mnt, *name)
		if err != nil {
			fmt.Fprintf(os.Stderr, "imagefs restore: %s: %v\n", dir, err)
			code = 1
			continue
		}
		fmt.Printf("restored %s from %s: id %s (was %s), checksum %s verified, %d properties set\n",
			r.name, dir, r.id, r.oldID, r.checksum, r.set)
	}
	return code
}

// restored describes one restored image.
type restored struct {
	name, id, oldID, checksum string
	set                       int
}

// readBackupProps reads BACKUP_DIR/properties/*: each file's content with
// one trailing newline stripped, as the mount writes it.
func readBackupProps(dir string) (map[string]string, error) {
	ents, err := os.ReadDir(filepath.Join(dir, "properties"))
	if err != nil {
		return nil, fmt.Errorf("not a backup of an image directory: %w", err)
	}
	props := map[string]string{}
	for _, e := range ents {
		if !e.Type().IsRegular() {
			continue
		}
		b, err := os.ReadFile(filepath.Join(dir, "properties", e.Name()))
		if err != nil {
			return nil, err
		}
		props[e.Name()] = strings.TrimSuffix(string(b), "\n")
	}
	return props, nil
}

// restoreImage restores one backup into mnt; on failure it removes the
// image it made.
func restoreImage(dir, mnt, name string) (restored, error) {
	var r restored
	props, err := readBackupProps(dir)
	if err != nil {
		return r, err
	}
	status := props[store.KeyStatus]
	if status != string(store.StatusActive) && status != string(store.StatusDeactivated) {
		return r, fmt.Errorf("backed-up status is %q: only active or deactivated images have data to restore", status)
	}
	want := props[store.KeyChecksum]
	if want == "" {
		return r, errors.New("the backup has no properties/checksum to verify the data against")
	}
	dataName := store.ImageDataName
	if f, ok := props[store.KeyDiskFormat]; ok {
		if dataName = store.DataFileName(f); dataName == "" {
			return r, fmt.Errorf("backed-up disk_format is %q: imagefs stores vhd or raw", f)
		}
	}
	data := filepath.Join(dir, dataName)
	if fi, err := os.Stat(data); err != nil || !fi.Mode().IsRegular() {
		return r, fmt.Errorf("no %s in the backup: %v", dataName, err)
	}
	if name == "" {
		name = props[store.KeyName]
	}
	if name == "" {
		name = filepath.Base(filepath.Clean(dir))
	}
	r.name, r.oldID = name, props[store.KeyID]

	img := filepath.Join(mnt, "images", name)
	if err := os.Mkdir(img, 0o755); err != nil {
		if errors.Is(err, os.ErrExist) {
			return r, fmt.Errorf("images/%s exists (the name is taken; restore under another with --name)", name)
		}
		return r, err
	}
	if err := fillRestored(&r, img, data, props); err != nil {
		if rerr := os.Remove(img); rerr != nil {
			return r, fmt.Errorf("%v; and removing the new images/%s failed: %v", err, name, rerr)
		}
		return r, fmt.Errorf("%v (the new images/%s was removed)", err, name)
	}
	return r, nil
}

// fillRestored uploads data into the new image directory img, checks its
// hashes against props and sets the settable properties.
func fillRestored(r *restored, img, data string, props map[string]string) error {
	if f, ok := props[store.KeyDiskFormat]; ok && f != store.DiskFormatVHD {
		// Before the data: the format decides how it is checked.
		if err := os.WriteFile(filepath.Join(img, "properties", store.KeyDiskFormat), []byte(f+"\n"), 0o644); err != nil {
			return fmt.Errorf("setting disk_format=%q: %w", f, err)
		}
	}
	if err := copyFile(data, filepath.Join(img, filepath.Base(data))); err != nil {
		return fmt.Errorf("upload of %s: %w", data, err)
	}
	prop := func(key string) string {
		v, _ := readProp(img, key)
		return v
	}
	if got := prop(store.KeyStatus); got != string(store.StatusActive) {
		return fmt.Errorf("the upload left the image %s (%s)", got, prop(store.KeyKillReason))
	}
	for _, key := range []string{store.KeyChecksum, store.KeyOSHashValue} {
		want, ok := props[key]
		if !ok {
			continue
		}
		if got := prop(key); got != want {
			return fmt.Errorf("%s of the restored data is %s, the backup says %s: the backup's %s is not the data it was taken from", key, got, want, filepath.Base(data))
		}
	}
	r.id, r.checksum = prop(store.KeyID), prop(store.KeyChecksum)

	keys := make([]string, 0, len(props))
	for k := range props {
		if store.IsSystemKey(k) || k == store.KeyName || k == store.KeyProtected || k == store.KeyMembers {
			continue
		}
		keys = append(keys, k)
	}
	slices.Sort(keys)
	set := func(k, v string) error {
		if cur, ok := readProp(img, k); ok && cur == v {
			return nil
		}
		if err := os.WriteFile(filepath.Join(img, "properties", k), []byte(v+"\n"), 0o644); err != nil {
			return fmt.Errorf("setting %s=%q: %w", k, v, err)
		}
		r.set++
		return nil
	}
	for _, k := range keys {
		if err := set(k, props[k]); err != nil {
			return err
		}
	}
	// members after visibility (only a shared image has them), as
	// pending again: the owner adds members, each accepts anew.
	if v := restoredMembers(props); v != "" {
		if err := set(store.KeyMembers, v); err != nil {
			return err
		}
	}
	if props[store.KeyStatus] == string(store.StatusDeactivated) {
		if err := os.WriteFile(filepath.Join(img, "properties", store.KeyStatus), []byte("deactivated\n"), 0o644); err != nil {
			return fmt.Errorf("deactivating (the backup is deactivated): %w", err)
		}
	}
	// protected last: a protected image could not be removed on failure.
	if v, ok := props[store.KeyProtected]; ok {
		return set(store.KeyProtected, v)
	}
	return nil
}

// restoredMembers is the members value a restore writes: the backed-up
// members' ids, one per line, for a shared image; "" for none.
func restoredMembers(props map[string]string) string {
	if props[store.KeyVisibility] != string(store.VisibilityShared) {
		return ""
	}
	var ids []string
	for _, line := range strings.Split(props[store.KeyMembers], "\n") {
		if f := strings.Fields(line); len(f) > 0 {
			ids = append(ids, f[0])
		}
	}
	return strings.Join(ids, "\n")
}

// readProp reads property key of the image directory img.
func readProp(img, key string) (string, bool) {
	b, err := os.ReadFile(filepath.Join(img, "properties", key))
	if err != nil {
		return "", false
	}
	return strings.TrimSuffix(string(b), "\n"), true
}

// copyFile copies src onto dst (created or truncated); the error of the
// close is the upload's verdict.
func copyFile(src, dst string) error {
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.CopyBuffer(out, in, make([]byte, 1<<20)); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

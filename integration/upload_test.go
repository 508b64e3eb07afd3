package integration

import (
	"bytes"
	"errors"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// checkSealed asserts what a complete upload of fx into images/<name>
// must give, read at once after the writer returned: status active (with
// cat, no wait), checksum, hashes, size and virtual_size, the same bytes
// under images/ and by-id/, qemu-img's view of the by-id file, mode 0444.
func (m *fsMount) checkSealed(t testing.TB, name string, fx vhdFixture) {
	t.Helper()
	if got := run(t, "cat", m.propFile(name, "status")); got != "active\n" {
		t.Fatalf("cat properties/status right after the writer returned = %q, want %q (kill reason: %q)",
			got, "active\n", readOptional(m.propFile(name, "imagefs_kill_reason")))
	}
	want := map[string]string{
		"checksum":      fx.MD5,
		"os_hash_algo":  "sha512",
		"os_hash_value": fx.SHA512,
		"size":          strconv.FormatInt(fx.Size, 10),
		"virtual_size":  strconv.FormatInt(fx.VirtualSize, 10),
		"disk_format":   "vhd",
	}
	for key, v := range want {
		if got := m.prop(name, key); got != v {
			t.Errorf("properties/%s = %q, want %q", key, got, v)
		}
	}
	id := m.prop(name, "id")
	cmp(t, fx.Path, m.dataFile(name))
	cmp(t, fx.Path, m.byID(id, "image.vhd"))
	if got := qemuVirtualSize(t, m.byID(id, "image.vhd")); got != fx.VirtualSize {
		t.Errorf("qemu-img info -f vpc by-id/%s/image.vhd: virtual-size %d, want %d", id, got, fx.VirtualSize)
	}
	// The exact mode (0444) is TestSealedModes' business: here, a
	// regular file of the right size that nobody may write.
	for _, p := range []string{m.dataFile(name), m.byID(id, "image.vhd")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o222 != 0 || fi.Mode().Perm()&0o400 == 0 || fi.Size() != fx.Size {
			t.Errorf("%s: mode %v size %d, want a read-only regular file of %d bytes", p, fi.Mode(), fi.Size(), fx.Size)
		}
	}
	if _, err := os.Stat(m.propFile(name, "imagefs_kill_reason")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("active image still has properties/imagefs_kill_reason: %v", err)
	}
}

// readOptional returns the content of path, or the error text.
func readOptional(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// checkKilled asserts that images/<name> is killed with a readable,
// non-empty reason (the same through the file and the xattr) and returns
// the reason.
func (m *fsMount) checkKilled(t testing.TB, name string) string {
	t.Helper()
	if got := run(t, "cat", m.propFile(name, "status")); got != "killed\n" {
		t.Fatalf("cat properties/status = %q, want %q", got, "killed\n")
	}
	reason := m.prop(name, "imagefs_kill_reason")
	if strings.TrimSpace(reason) == "" {
		t.Errorf("imagefs_kill_reason is empty")
	}
	// On the directory: a killed image shows no image.vhd.
	x := run(t, "getfattr", "--only-values", "-n", "user.imagefs_kill_reason", m.images(name))
	if x != reason {
		t.Errorf("getfattr user.imagefs_kill_reason = %q, file says %q", x, reason)
	}
	for _, key := range []string{"checksum", "os_hash_value"} {
		if _, err := os.Stat(m.propFile(name, key)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("killed image has properties/%s (%v)", key, err)
		}
	}
	return reason
}

// A writer copies a local VHD to a path in the mount with a real tool.
type writer struct {
	name  string
	write func(t testing.TB, src, dst string)
}

var writers = []writer{
	{"cp", func(t testing.TB, src, dst string) { run(t, "cp", src, dst) }},
	{"cp-sparse-always", func(t testing.TB, src, dst string) { run(t, "cp", "--sparse=always", src, dst) }},
	{"dd", func(t testing.TB, src, dst string) { run(t, "dd", "if="+src, "of="+dst, "bs=1M", "status=none") }},
	{"cat-redirect", func(t testing.TB, src, dst string) { sh(t, `cat "$1" > "$2"`, src, dst) }},
	{"shell-children", func(t testing.TB, src, dst string) {
		// The subshell opens the file; head and tail inherit it, write
		// and close their copies before the subshell closes its own; a
		// failed close (a seal of half the data) stops the script.
		n := fileSize(t, src)/2 + 12345
		sh(t, `(head -c "$3" "$1" && tail -c +"$4" "$1") > "$2"`, src, dst,
			strconv.FormatInt(n, 10), strconv.FormatInt(n+1, 10))
	}},
	{"rsync", func(t testing.TB, src, dst string) { run(t, "rsync", src, dst) }},
	{"rsync-a", func(t testing.TB, src, dst string) { run(t, "rsync", "-a", src, dst) }},
	{"rsync-inplace", func(t testing.TB, src, dst string) {
		run(t, "rsync", "--inplace", "-p", "--chmod=F444", src, dst)
	}},
}

// TestUploadWriters uploads fixed and dynamic VHDs (one of a size that is
// not a whole MiB) with every writer and checks the sealed image.
func TestUploadWriters(t *testing.T) {
	m := mount(t)
	requireTools(t, "rsync", "getfattr", "cmp")
	fixed30 := makeVHD(t, 30000000, "fixed")
	dyn10 := makeVHD(t, 10*mib, "dynamic")
	for _, w := range writers {
		for _, fx := range []vhdFixture{fixed30, dyn10} {
			name := w.name + "-" + fx.Subformat
			t.Run(name, func(t *testing.T) {
				m.mkimage(name)
				if got := m.prop(name, "status"); got != "queued" {
					t.Fatalf("status before upload = %q", got)
				}
				w.write(t, fx.Path, m.dataFile(name))
				m.checkSealed(t, name, fx)
			})
		}
	}
	// The other two combinations, with cp.
	for _, fx := range []vhdFixture{makeVHD(t, 30000000, "dynamic"), makeVHD(t, 10*mib, "fixed")} {
		name := "cp-" + fx.Subformat + "-" + strconv.FormatInt(fx.Size, 10)
		t.Run(name, func(t *testing.T) {
			m.mkimage(name)
			run(t, "cp", fx.Path, m.dataFile(name))
			m.checkSealed(t, name, fx)
		})
	}
}

// TestUploadSparseCopyMakesHoles checks that cp --sparse=always really
// skips the zero runs (the sealed backing file has holes) and that the
// holes read back as zeros with the right checksum.
func TestUploadSparseCopyMakesHoles(t *testing.T) {
	m := mount(t)
	requireTools(t, "getfattr", "cmp")
	for _, sub := range []string{"dynamic", "fixed"} {
		t.Run(sub, func(t *testing.T) {
			fx := makeVHD(t, 12*mib, sub)
			name := "sparse-" + sub
			id := m.mkimage(name)
			run(t, "cp", "--sparse=always", fx.Path, m.dataFile(name))
			m.checkSealed(t, name, fx)
			var st syscall.Stat_t
			if err := syscall.Stat(m.backing(id), &st); err != nil {
				t.Fatal(err)
			}
			// MiB 5.5-6 is a zero run inside the data in both subformats.
			if alloc := st.Blocks * 512; alloc > fx.Size-mib/4 {
				t.Errorf("backing file allocates %d of %d bytes: cp --sparse=always left no hole (test does not exercise holes)", alloc, fx.Size)
			}
		})
	}
}

// TestUploadScratchRename covers uploads through a scratch file renamed
// onto image.vhd: qemu-img convert to a scratch name then mv, and rsync's
// temporary file. After the rename image.vhd is the image's own inode,
// the same as by-id/<id>/image.vhd, at once.
func TestUploadScratchRename(t *testing.T) {
	m := mount(t)
	requireTools(t, "rsync", "getfattr", "cmp")
	raw := rawDisk(t, 30000000, 99)
	local := convertVHD(t, raw, "fixed") // same geometry as the upload

	t.Run("qemu-img-convert-mv", func(t *testing.T) {
		id := m.mkimage("q")
		tmp := m.images("q", ".tmp.vhd") // a temporary name: a scratch file
		run(t, "qemu-img", "convert", "-f", "raw", "-O", "vpc", "-o", "subformat=fixed", raw, tmp)
		if got := m.prop("q", "status"); got != "queued" {
			t.Errorf("status with only a scratch file = %q, want queued", got)
		}
		run(t, "mv", tmp, m.dataFile("q"))
		lsI := firstField(t, run(t, "ls", "-i", m.dataFile("q")))
		byIDIno := firstField(t, run(t, "ls", "-i", m.byID(id, "image.vhd")))
		if lsI != byIDIno {
			t.Errorf("ls -i images/q/image.vhd = %s, by-id/%s/image.vhd = %s: not the same inode", lsI, id, byIDIno)
		}
		// qemu-img stamps a time and a unique id: the upload's own bytes
		// are the reference, and its disk content must be the raw disk.
		fx := local
		fx.Path = filepath.Join(t.TempDir(), "uploaded.vhd")
		run(t, "cp", m.byID(id, "image.vhd"), fx.Path)
		fx.MD5, fx.SHA512 = md5sum(t, fx.Path), sha512sum(t, fx.Path)
		if fx.Size != fileSize(t, fx.Path) {
			t.Errorf("uploaded size %d, local conversion %d", fileSize(t, fx.Path), fx.Size)
		}
		m.checkSealed(t, "q", fx)
		run(t, "qemu-img", "compare", "-f", "raw", "-F", "vpc", raw, m.byID(id, "image.vhd"))
		if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("scratch file still there after mv: %v", err)
		}
	})

	t.Run("rsync-temp-file", func(t *testing.T) {
		fx := makeVHD(t, 10*mib, "dynamic")
		id := m.mkimage("r")
		run(t, "rsync", fx.Path, m.dataFile("r"))
		if a, b := inode(t, m.dataFile("r")), inode(t, m.byID(id, "image.vhd")); a != b {
			t.Errorf("stat -c %%i: images/r/image.vhd %s, by-id image.vhd %s", a, b)
		}
		m.checkSealed(t, "r", fx)
		names := dirNames(t, m.images("r"))
		if strings.Join(names, " ") != "image.vhd properties" {
			t.Errorf("image directory after rsync lists %v, want [image.vhd properties]", names)
		}
	})

	t.Run("go-rename-then-stat", func(t *testing.T) {
		// rename(2) then stat(2) with nothing in between.
		fx := makeVHD(t, 4*mib, "fixed")
		id := m.mkimage("g")
		tmp := m.images("g", ".image.vhd.part")
		copyFile(t, fx.Path, tmp)
		if err := os.Rename(tmp, m.dataFile("g")); err != nil {
			t.Fatal(err)
		}
		var a, b syscall.Stat_t
		if err := syscall.Stat(m.dataFile("g"), &a); err != nil {
			t.Fatal(err)
		}
		if err := syscall.Stat(m.byID(id, "image.vhd"), &b); err != nil {
			t.Fatal(err)
		}
		if a.Ino != b.Ino || a.Mode != b.Mode || a.Mode&0o222 != 0 {
			t.Errorf("right after rename: images/g/image.vhd ino %d mode %o, by-id ino %d mode %o; want one read-only inode",
				a.Ino, a.Mode, b.Ino, b.Mode)
		}
		m.checkSealed(t, "g", fx)
	})
}

func dirNames(t testing.TB, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	return out
}

// copyFile copies src to dst with Go: open (create or truncate), write,
// close; the close's error is the test's failure.
func copyFile(t testing.TB, src, dst string) {
	t.Helper()
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dst, b, 0o644); err != nil {
		t.Fatalf("write %s: %v", dst, err)
	}
}

// TestUploadIncomplete writes only the first part of a fixed VHD with
// several tools: the image never becomes active, it is killed with a
// reason, and a second full cp into the same image works.
func TestUploadIncomplete(t *testing.T) {
	m := mount(t)
	requireTools(t, "getfattr", "cmp")
	fx := makeVHD(t, 40*mib, "fixed")
	half := strconv.FormatInt(fx.Size/2, 10)

	cases := []struct {
		name  string
		write func(t *testing.T, dst string)
	}{
		{"head", func(t *testing.T, dst string) {
			// sh opens the file and head inherits it: the seal is at the
			// shell's close, whose error nobody reports, so only the
			// status tells.
			sh(t, `head -c "$3" "$1" > "$2"`, fx.Path, dst, half)
		}},
		{"dd", func(t *testing.T, dst string) {
			r := execCmd("dd", "if="+fx.Path, "of="+dst, "bs=1M", "count=20", "status=none")
			if r.code == 0 {
				t.Errorf("dd of half a VHD exited 0; its close should fail with EINVAL")
			}
		}},
		{"go-close", func(t *testing.T, dst string) {
			f, err := os.OpenFile(dst, os.O_WRONLY|os.O_TRUNC, 0)
			if err != nil {
				t.Fatal(err)
			}
			src, err := os.Open(fx.Path)
			if err != nil {
				t.Fatal(err)
			}
			defer src.Close()
			if _, err := io.CopyN(f, src, fx.Size/2); err != nil {
				t.Fatal(err)
			}
			wantErrno(t, "close of half a VHD", f.Close(), syscall.EINVAL)
		}},
		{"cp-sigkill", func(t *testing.T, dst string) { killedCp(t, m, fx, dst) }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			name := "half-" + c.name
			m.mkimage(name)
			c.write(t, m.dataFile(name))
			m.checkKilled(t, name)
			run(t, "cp", fx.Path, m.dataFile(name))
			m.checkSealed(t, name, fx)
		})
	}
}

// killedCp starts cp from a FIFO into dst, feeds it half of fx, waits
// until that much reached the mount and SIGKILLs cp.
func killedCp(t *testing.T, m *fsMount, fx vhdFixture, dst string) {
	fifo := filepath.Join(t.TempDir(), "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	cp := exec.Command("cp", fifo, dst)
	var stderr bytes.Buffer
	cp.Stderr = &stderr
	if err := cp.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cp.Wait() }()
	defer func() {
		cp.Process.Kill()
		<-done
	}()
	w, err := os.OpenFile(fifo, os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer w.Close()
	src, err := os.Open(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	if _, err := io.CopyN(w, src, fx.Size/2); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		if fi, err := os.Stat(dst); err == nil && fi.Size() >= fx.Size/2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("cp did not write half the image within 10 s (stderr %q)", stderr.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	if got := readProp(t, m.propFile(filepath.Base(filepath.Dir(dst)), "status")); got != "saving" {
		t.Errorf("status while cp is writing = %q, want saving", got)
	}
	cp.Process.Kill()
	err = <-done
	done <- err // for the deferred wait
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.Sys().(syscall.WaitStatus).Signal() != syscall.SIGKILL {
		t.Fatalf("cp was not killed by SIGKILL: %v", err)
	}
}

// TestUploadNotVHD copies a file that is not a VHD: cp exits non-zero
// (its close fails with EINVAL) and the image is killed; a Go close
// returns EINVAL.
func TestUploadNotVHD(t *testing.T) {
	m := mount(t)
	requireTools(t, "getfattr")
	raw := rawDisk(t, 3*mib, 7)

	m.mkimage("raw-cp")
	r := execCmd("cp", raw, m.dataFile("raw-cp"))
	if r.code == 0 {
		t.Errorf("cp of a raw disk exited 0, want a failure")
	}
	if !strings.Contains(r.stderr, "Invalid argument") {
		t.Errorf("cp stderr %q does not report EINVAL (Invalid argument)", r.stderr)
	}
	m.checkKilled(t, "raw-cp")

	m.mkimage("raw-go")
	f, err := os.OpenFile(m.dataFile("raw-go"), os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.Write(bytes.Repeat([]byte("not a vhd\n"), 10000)); err != nil {
		t.Fatal(err)
	}
	wantErrno(t, "close after writing a non-VHD", f.Close(), syscall.EINVAL)
	m.checkKilled(t, "raw-go")
}

// TestUploadOutOfOrder writes VHDs with holes, out of order, with ftruncate
// extending and shrinking the file, before the seal: the final bytes are
// accepted and the checksums are those of the final bytes (in-order
// hashing with holes, and the rehash at seal).
func TestUploadOutOfOrder(t *testing.T) {
	m := mount(t)
	requireTools(t, "getfattr", "cmp")
	fixed := makeVHD(t, 10*mib, "fixed")
	dynamic := makeVHD(t, 10*mib, "dynamic")

	type step func(t *testing.T, f *os.File, data []byte)
	const chunk = 256 << 10
	zeroChunk := make([]byte, chunk)
	pwrite := func(t *testing.T, f *os.File, b []byte, off int64) {
		t.Helper()
		if _, err := f.WriteAt(b, off); err != nil {
			t.Fatalf("pwrite at %d: %v", off, err)
		}
	}
	ftruncate := func(t *testing.T, f *os.File, size int64) {
		t.Helper()
		if err := f.Truncate(size); err != nil {
			t.Fatalf("ftruncate %d: %v", size, err)
		}
	}
	// chunks calls fn for each chunk of data, from off 0.
	chunks := func(data []byte, fn func(off int64, b []byte)) {
		for off := 0; off < len(data); off += chunk {
			fn(int64(off), data[off:min(off+chunk, len(data))])
		}
	}
	cases := []struct {
		name  string
		fx    vhdFixture
		write step
	}{
		{"footer-first-then-reverse", fixed, func(t *testing.T, f *os.File, d []byte) {
			n := int64(len(d))
			pwrite(t, f, d[n-512:], n-512)
			for off := (n - 512) / chunk * chunk; off >= 0; off -= chunk {
				pwrite(t, f, d[off:min(off+chunk, n-512)], off)
			}
		}},
		{"seek-past-holes", fixed, func(t *testing.T, f *os.File, d []byte) {
			chunks(d, func(off int64, b []byte) {
				if bytes.Equal(b, zeroChunk[:len(b)]) {
					if _, err := f.Seek(int64(len(b)), io.SeekCurrent); err != nil {
						t.Fatal(err)
					}
					return
				}
				if _, err := f.Write(b); err != nil {
					t.Fatal(err)
				}
			})
		}},
		{"ftruncate-extend-then-footer", fixed, func(t *testing.T, f *os.File, d []byte) {
			n := int64(len(d))
			// Data up to the trailing zeros, a hole made by ftruncate,
			// then the footer.
			// (Byte by byte: bytes.LastIndexFunc decodes UTF-8, and a
			// last nonzero byte ending a multi-byte sequence was left
			// out, about one run in thirty.)
			end := n - 512
			for end > 0 && d[end-1] == 0 {
				end--
			}
			pwrite(t, f, d[:end], 0)
			ftruncate(t, f, n)
			pwrite(t, f, d[n-512:], n-512)
		}},
		{"ftruncate-extend-first", dynamic, func(t *testing.T, f *os.File, d []byte) {
			ftruncate(t, f, int64(len(d)))
			chunks(d, func(off int64, b []byte) {
				if !bytes.Equal(b, zeroChunk[:len(b)]) {
					pwrite(t, f, b, off)
				}
			})
		}},
		{"junk-tail-then-shrink", dynamic, func(t *testing.T, f *os.File, d []byte) {
			n := int64(len(d))
			pwrite(t, f, d, 0)
			pwrite(t, f, bytes.Repeat([]byte{0xAB}, 3*chunk), n)
			ftruncate(t, f, n)
		}},
		{"overwrite-middle", dynamic, func(t *testing.T, f *os.File, d []byte) {
			pwrite(t, f, d, 0)
			junk := bytes.Repeat([]byte{0x5A}, chunk)
			pwrite(t, f, junk, 3*mib)
			pwrite(t, f, d[3*mib:3*mib+chunk], 3*mib)
		}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			data, err := os.ReadFile(c.fx.Path)
			if err != nil {
				t.Fatal(err)
			}
			m.mkimage(c.name)
			f, err := os.OpenFile(m.dataFile(c.name), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			c.write(t, f, data)
			if err := f.Close(); err != nil {
				t.Fatalf("close: %v (kill reason %q)", err, readOptional(m.propFile(c.name, "imagefs_kill_reason")))
			}
			m.checkSealed(t, c.name, c.fx)
		})
	}
}

// TestKilledStatusSameProcessGroup reads the status from the same shell
// (process group) right after the writer closed a truncated upload.
func TestKilledStatusSameProcessGroup(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 8*mib, "fixed")
	half := strconv.FormatInt(fx.Size/2, 10)
	for _, c := range []struct{ name, script string }{
		{"single-writer", `head -c "$3" "$1" > "$2"; cat "$4"`},
		{"redirection-children", `(head -c 1000 "$1"; tail -c +1001 "$1" | head -c "$3") > "$2"; cat "$4"`},
	} {
		t.Run(c.name, func(t *testing.T) {
			m.mkimage(c.name)
			r := shErr(c.script, fx.Path, m.dataFile(c.name), half, m.propFile(c.name, "status"))
			if r.stdout != "killed\n" {
				t.Errorf("status read by the writer's shell = %q, want %q (%s)", r.stdout, "killed\n", r)
			}
			m.checkKilled(t, c.name)
		})
	}
}

package integration

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// Creating a property file (issue #12 item 6), long keys (issue #13 item
// 5), control characters in names (item 17) and mv onto a typed key
// (item 18).

// propListed reports whether ls properties/ of image name lists key.
func propListed(t testing.TB, m *fsMount, name, key string) bool {
	t.Helper()
	ents, err := os.ReadDir(m.images(name, "properties"))
	if err != nil {
		t.Fatalf("ls images/%s/properties: %v", name, err)
	}
	return slices.ContainsFunc(ents, func(e os.DirEntry) bool { return e.Name() == key })
}

// wantNoProperty checks that image name has no property key: no file, not
// listed, no xattr.
func wantNoProperty(t testing.TB, m *fsMount, name, key, when string) {
	t.Helper()
	if _, err := os.Stat(m.propFile(name, key)); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("%s: stat properties/%s: %v, want ENOENT", when, key, err)
	}
	if propListed(t, m, name, key) {
		t.Errorf("%s: ls properties/ lists %s", when, key)
	}
	buf := make([]byte, 64)
	if n, err := unix.Getxattr(m.images(name), "user."+key, buf); !errors.Is(err, unix.ENODATA) {
		t.Errorf("%s: getxattr user.%s: %q %v, want ENODATA", when, key, buf[:max(n, 0)], err)
	}
}

// TestPropertyCreateCrash: a property file created and written but not
// yet closed when the daemon is killed leaves no property (it used to
// leave the key with an empty value: the create committed it). Until the
// close, the writer's fd works (fstat, write) and nobody else sees the
// file.
func TestPropertyCreateCrash(t *testing.T) {
	m := mount(t)
	m.mkimage("img")
	path := m.propFile("img", "newkey")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.Write([]byte("value\n")); err != nil {
		t.Fatalf("write: %v", err)
	}
	if fi, err := f.Stat(); err != nil || fi.Size() != 6 || fi.Mode().Perm() != 0o644 || !fi.Mode().IsRegular() {
		t.Errorf("fstat of the file being created: %v %v, want a 6-byte 0644 file", fi, err)
	} else if st := fi.Sys().(*syscall.Stat_t); st.Uid != 0 {
		t.Errorf("fstat: uid %d, want the image's owner 0", st.Uid)
	}
	wantNoProperty(t, m, "img", "newkey", "before the close")

	m.crash()
	f.Close() // ENOTCONN: the daemon is dead
	m.start()
	wantNoProperty(t, m, "img", "newkey", "after SIGKILL before the close")

	// A shell that opened the file (exec 3>) and has not written yet.
	// (Once it writes, the shell's close of its copy of fd 3 commits the
	// value: each close of a FUSE file flushes it.)
	ready := t.TempDir() + "/ready"
	sh := exec.Command("sh", "-c", `exec 3>"$1"; : > "$2"; exec sleep 60`, "sh", path, ready)
	if err := sh.Start(); err != nil {
		t.Fatal(err)
	}
	defer sh.Process.Kill()
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, err := os.Stat(ready); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the shell did not open the file within 10 s")
		}
	}
	m.crash()
	sh.Process.Kill()
	sh.Wait()
	m.start()
	wantNoProperty(t, m, "img", "newkey", "after SIGKILL while a shell held the file open")

	// A completed echo is there, with its value, after a crash.
	run(t, "sh", "-c", `echo value > "$1"`, "sh", path)
	m.crash()
	m.start()
	if got := m.prop("img", "newkey"); got != "value" {
		t.Errorf("after echo and SIGKILL: newkey = %q, want value", got)
	}
}

// TestPropertyCreate: what creating a property file does with the
// tools: echo sets the value at the close, touch and ": >" add an empty
// value, a key another writer created meanwhile refuses an O_EXCL write
// (EEXIST) and keeps the other value, or without O_EXCL is overwritten,
// a key the rules refuse fails at the open.
func TestPropertyCreate(t *testing.T) {
	m := mount(t)
	requireTools(t, "touch", "setfattr")
	m.mkimage("img")
	run(t, "sh", "-c", `echo v1 > "$1"`, "sh", m.propFile("img", "echoed"))
	if got := m.prop("img", "echoed"); got != "v1" {
		t.Errorf("echo v1 > properties/echoed: %q", got)
	}
	// touch and ": >" close without a write: the empty value is set when
	// the kernel releases the file, a moment after close returns.
	run(t, "touch", m.propFile("img", "touched"))
	run(t, "sh", "-c", `: > "$1"`, "sh", m.propFile("img", "truncated"))
	for _, key := range []string{"touched", "truncated"} {
		deadline := time.Now().Add(5 * time.Second)
		for !propListed(t, m, "img", key) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
		if got := m.prop("img", key); got != "" {
			t.Errorf("%s: %q, want empty", key, got)
		}
	}

	// Another writer creates the key between this open and its write:
	// O_EXCL (set -C) refuses the write, without it the value overwrites.
	f, err := os.OpenFile(m.propFile("img", "raced"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	run(t, "setfattr", "-n", "user.raced", "-v", "theirs", m.images("img"))
	_, err = f.Write([]byte("mine\n"))
	wantErrno(t, "O_EXCL write of a key created meanwhile by another", err, syscall.EEXIST)
	f.Close()
	if got := m.prop("img", "raced"); got != "theirs" {
		t.Errorf("raced = %q, want theirs (the other writer's)", got)
	}
	f, err = os.OpenFile(m.propFile("img", "raced2"), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	run(t, "setfattr", "-n", "user.raced2", "-v", "theirs", m.images("img"))
	if _, err := f.Write([]byte("mine\n")); err != nil {
		t.Errorf("write of a key created meanwhile (no O_EXCL): %v", err)
	}
	if err := f.Close(); err != nil {
		t.Errorf("close of a key created meanwhile (no O_EXCL): %v", err)
	}
	if got := m.prop("img", "raced2"); got != "mine" {
		t.Errorf("raced2 = %q, want mine (the last writer's)", got)
	}

	// Refused at the open, with nothing created: bad key, too long a key.
	for _, key := range []string{"bad\tkey", strings.Repeat("k", 251)} {
		r := shErr(`echo v > "$1"`, m.propFile("img", key))
		if r.code == 0 || !strings.Contains(r.stderr, "Invalid argument") {
			t.Errorf("echo v > properties/%.20q: want Invalid argument, got %s", key, r)
		}
		if _, err := os.Stat(m.propFile("img", key)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("properties/%.20q after the refused create: %v", key, err)
		}
	}
}

// TestLongPropertyKeys: a key's attribute name user.KEY must fit the
// kernel's 255 bytes, so keys are at most 250 bytes, through files and
// xattrs; imagefs ls fails at once, with a message, on a longer key (it
// used to retry getxattr's ERANGE forever at 100% CPU).
func TestLongPropertyKeys(t *testing.T) {
	m := mount(t)
	requireTools(t, "setfattr", "getfattr")
	m.mkimage("img")
	k250, k251 := strings.Repeat("k", 250), strings.Repeat("l", 251)
	run(t, "sh", "-c", `echo v > "$1"`, "sh", m.propFile("img", k250))
	run(t, "setfattr", "-n", "user."+strings.Repeat("x", 250), "-v", "w", m.images("img"))
	if out := run(t, "getfattr", "--only-values", "-n", "user."+k250, m.images("img")); out != "v" {
		t.Errorf("getfattr of the 250-byte key: %q", out)
	}
	for _, n := range []int{251, 255} {
		key := strings.Repeat("m", n)
		r := shErr(`echo v > "$1"`, m.propFile("img", key))
		if r.code == 0 || !strings.Contains(r.stderr, "Invalid argument") {
			t.Errorf("echo v > properties/<%d-byte key>: want Invalid argument, got %s", n, r)
		}
		if r := execCmd("setfattr", "-n", "user."+key, "-v", "v", m.images("img")); r.code == 0 {
			t.Errorf("setfattr of a %d-byte key succeeded", n)
		}
		if _, err := os.Stat(m.propFile("img", key)); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("a %d-byte key exists after the refusals: %v", n, err)
		}
	}
	// The 250-byte keys are in getfattr -d's dump.
	if out := run(t, "getfattr", "-d", m.images("img")); !strings.Contains(out, "user."+k250+`="v"`) {
		t.Errorf("getfattr -d does not show the 250-byte key:\n%s", out)
	}

	ls := func(args ...string) result {
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		cmd := exec.CommandContext(ctx, binary, append([]string{"ls"}, append(args, m.Mnt)...)...)
		var out, errb strings.Builder
		cmd.Stdout, cmd.Stderr = &out, &errb
		err := cmd.Run()
		r := result{stdout: out.String(), stderr: errb.String(), err: err, code: cmd.ProcessState.ExitCode()}
		if ctx.Err() != nil {
			t.Errorf("imagefs ls %.60q did not finish within 20 s", args)
		}
		return r
	}
	if r := ls("-c", k250); r.code != 0 || !strings.Contains(r.stdout, k250) {
		t.Errorf("imagefs ls -c <250-byte key>: %s", r)
	}
	for _, args := range [][]string{
		{"-c", k251},
		{"-p", "status=queued", "-p", k251 + "=v"},
		{"-p", k251 + "=v"},
		{"--sort", k251},
	} {
		r := ls(args...)
		if r.code != 2 || !strings.Contains(r.stderr, "at most 250 bytes") {
			t.Errorf("imagefs ls %.30q...: want exit 2 saying keys are at most 250 bytes, got %s", args, r)
		}
	}
}

// TestNameControlCharacters: image names with control characters
// (newline, tab, escape, DEL, any byte below 0x20) are refused with
// EINVAL by mkdir, rename and a write of properties/name; nothing is
// created or renamed.
func TestNameControlCharacters(t *testing.T) {
	m := mount(t)
	requireTools(t, "mkdir", "setfattr")
	m.mkimage("img")
	for _, name := range []string{"new\nline", "tab\there", "esc\x1b[31m", "del\x7f", "cr\r", "\x01"} {
		r := execCmd("mkdir", m.images(name))
		if r.code == 0 || !strings.Contains(r.stderr, "Invalid argument") {
			t.Errorf("mkdir %q: want Invalid argument, got %s", name, r)
		}
		wantErrno(t, fmt.Sprintf("rename onto %q", name), syscall.Rename(m.images("img"), m.images(name)), syscall.EINVAL)
		r = bashErr(`printf '%s\n' "$1" > "$2"`, name, m.propFile("img", "name"))
		if r.code == 0 || !strings.Contains(r.stderr, "Invalid argument") {
			t.Errorf("printf %q > properties/name: want Invalid argument, got %s", name, r)
		}
		if r := execCmd("setfattr", "-n", "user.name", "-v", name, m.images("img")); r.code == 0 {
			t.Errorf("setfattr user.name=%q succeeded", name)
		}
	}
	ents, err := os.ReadDir(m.images())
	if err != nil || len(ents) != 1 || ents[0].Name() != "img" {
		t.Errorf("images/ after the refusals: %v %v, want only img", ents, err)
	}
	if got := m.prop("img", "name"); got != "img" {
		t.Errorf("name = %q after the refusals", got)
	}
	// Other odd but printable bytes stay accepted.
	run(t, "mkdir", m.images("sp ace\xff"))
}

// TestRenamePropertyOntoTypedKey: mv properties/k1 properties/min_ram
// with a value min_ram refuses says "Operation not permitted" (EPERM)
// and changes nothing; it used to answer EINVAL, which mv prints as "a
// subdirectory of itself". A valid value moves.
func TestRenamePropertyOntoTypedKey(t *testing.T) {
	m := mount(t)
	requireTools(t, "mv")
	m.mkimage("img")
	writeProp(t, m, "img", "k1", "not a number")
	r := execCmd("mv", m.propFile("img", "k1"), m.propFile("img", "min_ram"))
	if r.code == 0 || !strings.Contains(r.stderr, "Operation not permitted") || strings.Contains(r.stderr, "subdirectory") {
		t.Errorf("mv k1 min_ram with a bad value: want Operation not permitted, got %s", r)
	}
	if got := m.prop("img", "min_ram"); got != "0" {
		t.Errorf("min_ram = %q after the refused mv", got)
	}
	if got := m.prop("img", "k1"); got != "not a number" {
		t.Errorf("k1 = %q after the refused mv", got)
	}
	writeProp(t, m, "img", "k2", "2048")
	run(t, "mv", m.propFile("img", "k2"), m.propFile("img", "min_ram"))
	if got := m.prop("img", "min_ram"); got != "2048" {
		t.Errorf("min_ram = %q after mv k2 min_ram", got)
	}
	if _, err := os.Stat(m.propFile("img", "k2")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("k2 still there after mv: %v", err)
	}
}

// bashErr runs a bash script with positional arguments: bash, unlike dash,
// prints the errno of a failed write ("write error: No space left on
// device"; dash says "I/O error" for every one).
func bashErr(script string, args ...string) result {
	return execCmd("bash", append([]string{"-c", script, "bash"}, args...)...)
}

package integration

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

// holdFd starts a child process (sleep) that inherits f, the writer's
// open file: the upload's write handle then lives until release is
// called, which kills the child and waits for it.
func holdFd(t *testing.T, f *os.File) (release func()) {
	t.Helper()
	cmd := exec.Command("sleep", "600")
	cmd.ExtraFiles = []*os.File{f}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var once sync.Once
	release = func() {
		once.Do(func() {
			cmd.Process.Kill()
			cmd.Wait()
		})
	}
	t.Cleanup(release)
	return release
}

// openRead opens path read-only and reads it whole, returning the bytes
// and the open file (nil on error).
func openRead(path string) (*os.File, []byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	b, err := io.ReadAll(f)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	return f, b, nil
}

// passthroughActive reports whether the daemon serves sealed data with
// FUSE passthrough (it logs a warning when it cannot).
func (m *fsMount) passthroughActive() bool {
	return !bytes.Contains(readFile(m.log), []byte("sealed data is read through imagefs"))
}

// TestPassthroughReaderAcrossWriterRelease is the sequence of issue 12
// item 5: the upload's write handle outlives the seal (a child holds the
// writer's descriptor), a reader opens the sealed image, the child closes
// its copy (RELEASE of the write handle), and every later open must read
// the sealed bytes. go-fuse's bridge dropped the inode's passthrough
// backing reference at the write handle's RELEASE although that handle
// never took one; the next open then registered a second backing file for
// the inode, which the kernel refuses: EIO for as long as reader 1 stayed
// open.
func TestPassthroughReaderAcrossWriterRelease(t *testing.T) {
	m := mount(t)
	m.Args = []string{"--metrics-addr", "127.0.0.1:0"}
	m.remount()
	addr := metricsAddrOf(t, m.log)
	fx := makeVHD(t, 4*mib, "fixed")
	want, err := os.ReadFile(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	for _, tree := range []string{"images", "by-id"} {
		t.Run(tree, func(t *testing.T) {
			name := "held-" + tree
			id := m.mkimage(name)
			path := m.dataFile(name)
			if tree == "by-id" {
				path = m.byID(id, "image.vhd")
			}
			w, err := os.OpenFile(m.dataFile(name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := w.Write(want); err != nil {
				t.Fatal(err)
			}
			release := holdFd(t, w)
			// The opener's close seals; the child still holds the handle.
			if err := w.Close(); err != nil {
				t.Fatalf("close of the opener (seal): %v", err)
			}
			if got := m.prop(name, "status"); got != "active" {
				t.Fatalf("status after the opener's close = %q, want active", got)
			}
			r1, got, err := openRead(path)
			if err != nil {
				t.Fatalf("reader 1: %v", err)
			}
			defer r1.Close()
			if !bytes.Equal(got, want) {
				t.Fatalf("reader 1 read %d bytes that differ from the upload", len(got))
			}
			release() // RELEASE of the write handle
			// RELEASE is asynchronous: open again for a while after it.
			for deadline := time.Now().Add(time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
				for _, p := range []string{m.dataFile(name), m.byID(id, "image.vhd")} {
					r2, got, err := openRead(p)
					if err != nil {
						t.Fatalf("reader 2 (%s) while reader 1 is open, after the writer's RELEASE: %v", p[len(m.Mnt)+1:], err)
					}
					r2.Close()
					if !bytes.Equal(got, want) {
						t.Fatalf("reader 2 read %d bytes that differ from the upload", len(got))
					}
				}
			}
			// Reader 1 still reads right, too.
			b := make([]byte, len(want))
			if _, err := r1.ReadAt(b, 0); err != nil && err != io.EOF {
				t.Fatalf("reader 1 after reader 2: %v", err)
			}
			if !bytes.Equal(b, want) {
				t.Errorf("reader 1 reads other bytes after reader 2")
			}
		})
	}
	// Every reader, the one opened before the writer's RELEASE included,
	// read by passthrough: no READ reached the daemon.
	if !m.passthroughActive() {
		t.Logf("passthrough is not in use here: the test ran without it")
	} else if got := scrape(t, addr)[`imagefs_fuse_requests_total{op="read"}`]; got != 0 {
		t.Errorf("%v READ requests: some readers were not served by passthrough", got)
	}
}

// TestPassthroughReadersAroundSeal has readers open by-id/<id>/image.vhd
// over and over while uploads are sealed, with the writer's descriptor held
// by a child past the seal in half of the rounds: before the seal they get
// EACCES or ENOENT, after it the sealed bytes, and never EIO.
func TestPassthroughReadersAroundSeal(t *testing.T) {
	m := mount(t)
	fx := makeVHD(t, 2*mib, "dynamic")
	want, err := os.ReadFile(fx.Path)
	if err != nil {
		t.Fatal(err)
	}
	const rounds, readers = 8, 6
	for round := range rounds {
		name := fmt.Sprintf("round-%d", round)
		id := m.mkimage(name)
		paths := []string{m.dataFile(name), m.byID(id, "image.vhd")}
		var stop atomic.Bool
		var sealedReads atomic.Int64
		var wg sync.WaitGroup
		errs := make(chan string, readers)
		for r := range readers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				var held []*os.File // some readers keep their file open
				defer func() {
					for _, f := range held {
						f.Close()
					}
				}()
				for i := 0; !stop.Load() || i < 4; i++ {
					f, got, err := openRead(paths[(r+i)%2])
					switch {
					case err == nil:
						if !bytes.Equal(got, want) {
							f.Close()
							errs <- fmt.Sprintf("round %d: a reader read %d bytes that differ from the upload", round, len(got))
							return
						}
						sealedReads.Add(1)
						if (r+i)%3 == 0 && len(held) < 4 {
							held = append(held, f)
						} else {
							f.Close()
						}
					case errnoOf(err) == syscall.EACCES || errnoOf(err) == syscall.ENOENT:
						// not sealed yet
					default:
						errs <- fmt.Sprintf("round %d: open: %v", round, err)
						return
					}
				}
			}()
		}
		w, err := os.OpenFile(m.dataFile(name), os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(want); err != nil {
			t.Fatal(err)
		}
		release := func() {}
		if round%2 == 0 {
			release = holdFd(t, w)
		}
		if err := w.Close(); err != nil {
			t.Fatalf("round %d: close (seal): %v", round, err)
		}
		time.Sleep(100 * time.Millisecond)
		release()
		time.Sleep(300 * time.Millisecond)
		stop.Store(true)
		wg.Wait()
		close(errs)
		var msgs []string
		for e := range errs {
			msgs = append(msgs, e)
		}
		if len(msgs) > 0 {
			t.Fatalf("%s", strings.Join(msgs, "\n"))
		}
		if sealedReads.Load() == 0 {
			t.Fatalf("round %d: no reader read the sealed image", round)
		}
	}
}

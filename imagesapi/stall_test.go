package imagesapi

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store"
)

// newEnvIdle is newEnv with a client_socket_timeout of idle; it returns
// the Server too (Wait: its handlers returned).
func newEnvIdle(t *testing.T, idle time.Duration) (*env, *Server) {
	t.Helper()
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	h, err := New(st, Options{Auth: AuthNoAuth, Projects: map[string]uint32{"alice": 1000}, ClientSocketTimeout: idle})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(h)
	srv.Config = NewHTTPServer(h)
	srv.Start()
	t.Cleanup(func() {
		srv.Close()
		st.Close()
	})
	return &env{t: t, st: st, dir: dir, url: srv.URL}, h
}

// sendHead dials the API and sends the head of a PUT of n bytes to path
// as alice.
func (e *env) sendHead(path string, n int) net.Conn {
	e.t.Helper()
	conn, err := net.Dial("tcp", strings.TrimPrefix(e.url, "http://"))
	if err != nil {
		e.t.Fatal(err)
	}
	e.t.Cleanup(func() { conn.Close() })
	fmt.Fprintf(conn, "PUT %s HTTP/1.1\r\nHost: x\r\nX-Tenant-Id: alice\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", path, n)
	return conn
}

// readResponse reads the answer on conn (10 s at most).
func readResponse(t *testing.T, conn net.Conn) (int, string) {
	t.Helper()
	conn.SetReadDeadline(time.Now().Add(10 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// A client that sends part of an image body and then nothing, the
// connection open, is cut off after client_socket_timeout: the upload or
// stage aborts (queued again, nothing staged) and its handler returns.
func TestStalledBodyCutOff(t *testing.T) {
	const idle = time.Second
	for _, kind := range []struct {
		path   string
		during store.Status
	}{{"file", store.StatusSaving}, {"stage", store.StatusUploading}} {
		t.Run(kind.path, func(t *testing.T) {
			e, h := newEnvIdle(t, idle)
			id := e.create("alice", vhd(map[string]any{"name": "stalled"}))
			data := testutil.FixedVHD(t, 4<<20)
			conn := e.sendHead("/v2/images/"+id+"/"+kind.path, len(data))
			if _, err := conn.Write(data[:1<<20]); err != nil {
				t.Fatal(err)
			}
			e.waitStatus(id, kind.during)
			start := time.Now()
			e.waitStatus(id, store.StatusQueued) // 10 s at most
			if waited := time.Since(start); waited < idle/2 {
				t.Errorf("queued again %s after the stall, before the %s limit", waited, idle)
			}
			if !h.Wait(5 * time.Second) {
				t.Fatal("the handler of the stalled request did not return")
			}
			if code, body := readResponse(t, conn); code != http.StatusBadRequest || !strings.Contains(body, "client_socket_timeout") {
				t.Errorf("answer to the stalled client: %d %s", code, body)
			}
			if s := e.staged(); len(s) != 0 {
				t.Errorf("staging files left: %v", s)
			}
			// The image takes a whole body afterwards.
			code, _, b := e.do("alice", "PUT", "/v2/images/"+id+"/"+kind.path, "application/octet-stream", data)
			if code != http.StatusNoContent {
				t.Fatalf("PUT after the cut: %d %s", code, b)
			}
		})
	}
}

// A slow but steady client (a byte every 300 ms for 3 s, the limit 1 s)
// is not cut off: the limit is on no progress, not on the total time.
func TestSlowSteadyBodyNotCutOff(t *testing.T) {
	const idle = time.Second
	for _, kind := range []struct {
		path  string
		after store.Status
	}{{"file", store.StatusActive}, {"stage", store.StatusUploading}} {
		t.Run(kind.path, func(t *testing.T) {
			e, h := newEnvIdle(t, idle)
			id := e.create("alice", vhd(map[string]any{"name": "slow"}))
			data := testutil.FixedVHD(t, 1<<20)
			conn := e.sendHead("/v2/images/"+id+"/"+kind.path, len(data))
			const slow = 10 // the last 10 bytes, one each 300 ms: 3 s
			if _, err := conn.Write(data[:len(data)-slow]); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			for i := len(data) - slow; i < len(data); i++ {
				time.Sleep(300 * time.Millisecond)
				if _, err := conn.Write(data[i : i+1]); err != nil {
					t.Fatalf("byte %d, %s into the trickle: %v", i, time.Since(start), err)
				}
			}
			if code, body := readResponse(t, conn); code != http.StatusNoContent {
				t.Fatalf("slow upload after %s: %d %s", time.Since(start), code, body)
			}
			if d := time.Since(start); d < 3*time.Second {
				t.Fatalf("the trickle took %s, want 3 s", d)
			}
			e.waitStatus(id, kind.after)
			if !h.Wait(5 * time.Second) {
				t.Fatal("the handler did not return")
			}
		})
	}
}

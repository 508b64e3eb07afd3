package imagesapi

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"sync"
	"testing"
	"time"

	"github.com/imagefs/imagefs/internal/testutil"
	"github.com/imagefs/imagefs/store"
)

// TestConcurrentRequests: many clients at once, each on its own image
// and all listing; every answer is a Glance status and the catalog ends
// as the successful requests left it.
func TestConcurrentRequests(t *testing.T) {
	e := newEnv(t)
	data := testutil.FixedVHD(t, 1<<20)
	const n = 40
	var wg sync.WaitGroup
	errs := make(chan error, n*8)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			who := []string{"alice", "bob", "admin"}[i%3]
			body, _ := json.Marshal(vhd(map[string]any{"name": fmt.Sprintf("c-%d", i), "k": "v"}))
			code, _, b := e.do(who, "POST", "/v2/images", "application/json", body)
			if code != 201 {
				errs <- fmt.Errorf("create %d: %d %s", i, code, b)
				return
			}
			var m map[string]any
			json.Unmarshal(b, &m)
			id := m["id"].(string)
			if code, _, b := e.do(who, "PATCH", "/v2/images/"+id, patchV21, []byte(`[{"op":"add","path":"/n","value":"`+fmt.Sprint(i)+`"}]`)); code != 200 {
				errs <- fmt.Errorf("patch %d: %d %s", i, code, b)
			}
			if code, _, b := e.do(who, "GET", "/v2/images?limit=5", "", nil); code != 200 {
				errs <- fmt.Errorf("list %d: %d %s", i, code, b)
			}
			if i%4 == 0 {
				if code, _, b := e.do(who, "PUT", "/v2/images/"+id+"/file", "application/octet-stream", data); code != 204 {
					errs <- fmt.Errorf("upload %d: %d %s", i, code, b)
				}
			}
			if i%5 == 0 {
				if code, _, b := e.do(who, "DELETE", "/v2/images/"+id, "", nil); code != 204 {
					errs <- fmt.Errorf("delete %d: %d %s", i, code, b)
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for i := range n {
		im := e.st.Lookup(fmt.Sprintf("c-%d", i))
		switch {
		case i%5 == 0 && im != nil:
			t.Errorf("c-%d not deleted", i)
		case i%5 != 0 && im == nil:
			t.Errorf("c-%d missing", i)
		case im == nil:
		case im.Extra["n"] != fmt.Sprint(i) || im.Extra["k"] != "v":
			t.Errorf("c-%d: properties %v", i, im.Extra)
		case i%4 == 0 && im.Status != store.StatusActive, i%4 != 0 && im.Status != store.StatusQueued:
			t.Errorf("c-%d: status %s", i, im.Status)
		}
	}
}

// TestStopAbortsUpload: stopping the server (Shutdown, then Close, then
// Wait, as the mount does) while an upload is in flight leaves the image
// queued, and Wait returns once its handler has.
func TestStopAbortsUpload(t *testing.T) {
	dir := t.TempDir()
	st, err := store.Open(dir, store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	h, err := New(st, Options{Auth: AuthNoAuth})
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := NewHTTPServer(h)
	go srv.Serve(ln)
	im, err := st.Create(store.Root, "stop")
	if err != nil {
		t.Fatal(err)
	}
	conn, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "PUT /v2/images/%s/file HTTP/1.1\r\nHost: x\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n", im.ID, 10<<20)
	conn.Write(make([]byte, 2<<20))
	deadline := time.Now().Add(10 * time.Second)
	for st.Get(im.ID).Status != store.StatusSaving {
		if time.Now().After(deadline) {
			t.Fatal("upload not started")
		}
		time.Sleep(10 * time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if err := srv.Shutdown(ctx); err == nil {
		t.Fatal("Shutdown returned while an upload was in flight")
	}
	srv.Close()
	if !h.Wait(10 * time.Second) {
		t.Fatal("the upload's handler did not return after Close")
	}
	if s := st.Get(im.ID).Status; s != store.StatusQueued {
		t.Fatalf("status %s after the stop, want queued", s)
	}
	if _, err := http.Get("http://" + ln.Addr().String() + "/healthcheck"); err == nil {
		t.Fatal("the server still answers")
	}
}

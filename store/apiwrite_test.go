package store

import (
	"errors"
	"os"
	"path/filepath"
	"testing"
)

func TestCreateWithID(t *testing.T) {
	s := openStore(t, t.TempDir())
	c := Caller{UID: 1000, GID: 1000}
	for _, bad := range []string{"", "x", "6C1B0B53-8D9A-4A5E-9A43-0F3C7C8A1D2E", "{6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e}", "6c1b0b538d9a4a5e9a430f3c7c8a1d2e"} {
		if _, err := s.CreateWithID(c, bad, "a"); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateWithID(%q): %v, want ErrInvalid", bad, err)
		}
	}
	const id = "6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e"
	im, err := s.CreateWithID(c, id, "a")
	if err != nil || im.ID != id || im.Owner != 1000 || im.Status != StatusQueued {
		t.Fatalf("CreateWithID: %+v, %v", im, err)
	}
	if _, err := s.CreateWithID(c, id, "b"); !errors.Is(err, ErrExists) {
		t.Fatalf("the same id again: %v, want ErrExists", err)
	}
	if s.Lookup("b") != nil || len(s.List()) != 1 {
		t.Fatal("a refused create left an image")
	}
	// Survives a reopen.
	dir := s.Dir()
	s.Close()
	s = openStore(t, dir)
	defer s.Close()
	if im := s.Get(id); im == nil || im.Name != "a" {
		t.Fatalf("after reopen: %+v", im)
	}
}

func TestAbortWriter(t *testing.T) {
	s := newStore(t)
	c := Caller{UID: 1000, GID: 1000}
	im, err := s.Create(c, "cut")
	if err != nil {
		t.Fatal(err)
	}
	data := fixedVHD(t, 1<<20)
	u, err := s.OpenWrite(c, im.ID, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := u.WriteAt(data[:len(data)/2], 0); err != nil {
		t.Fatal(err)
	}
	if st := s.Get(im.ID).Status; st != StatusSaving {
		t.Fatalf("status %s while writing", st)
	}
	if err := s.AbortWriter(u, "client gone"); err != nil {
		t.Fatal(err)
	}
	if got := s.Get(im.ID); got.Status != StatusQueued || got.Checksum != "" {
		t.Fatalf("after abort: %+v", got)
	}
	if left, _ := filepath.Glob(filepath.Join(s.Dir(), "staging", "*")); len(left) != 0 {
		t.Fatalf("staging files left: %v", left)
	}
	if _, err := os.Stat(filepath.Join(s.Dir(), "data", im.ID+".vhd")); !os.IsNotExist(err) {
		t.Fatalf("data file after abort: %v", err)
	}
	// A whole upload afterwards seals.
	if err := upload(t, s, c, im.ID, data, 64<<10); err != nil {
		t.Fatal(err)
	}
	if st := s.Get(im.ID).Status; st != StatusActive {
		t.Fatalf("status %s after the full upload", st)
	}
}

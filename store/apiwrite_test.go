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
		if _, err := s.CreateWithID(c, bad, "a", nil); !errors.Is(err, ErrInvalid) {
			t.Errorf("CreateWithID(%q): %v, want ErrInvalid", bad, err)
		}
	}
	const id = "6c1b0b53-8d9a-4a5e-9a43-0f3c7c8a1d2e"
	im, err := s.CreateWithID(c, id, "a", nil)
	if err != nil || im.ID != id || im.Owner != 1000 || im.Status != StatusQueued {
		t.Fatalf("CreateWithID: %+v, %v", im, err)
	}
	if _, err := s.CreateWithID(c, id, "b", nil); !errors.Is(err, ErrExists) {
		t.Fatalf("the same id again: %v, want ErrExists", err)
	}
	if s.Lookup("b") != nil || len(s.List()) != 1 {
		t.Fatal("a refused create left an image")
	}
	// Properties in the same commit, under SetProperty's rules: a refused
	// one leaves no image.
	const id2 = "0b6c2f4e-3b1d-4c5e-8f7a-9d0e1f2a3b4c"
	for _, bad := range [][]KeyValue{
		{{"os_distro", "x"}, {KeyVisibility, "public"}}, // only root publicizes
		{{KeyStatus, "active"}},
		{{"vhd_type", "x"}},
		{{KeyMinRAM, "-1"}},
		{{KeyName, "other"}},
		{{"k/ey", "x"}},
	} {
		if _, err := s.CreateWithID(c, id2, "c", bad); err == nil {
			t.Errorf("CreateWithID with %v: accepted", bad)
		}
		if s.Get(id2) != nil || s.Lookup("c") != nil {
			t.Fatalf("CreateWithID with %v left an image", bad)
		}
	}
	im2, err := s.CreateWithID(c, id2, "c", []KeyValue{{"os_distro", "superos"}, {KeyVisibility, "shared"}, {KeyMinRAM, "512"}, {KeyProtected, "true"}})
	if err != nil || im2.Extra["os_distro"] != "superos" || im2.Visibility != VisibilityShared || im2.MinRAM != 512 || !im2.Protected {
		t.Fatalf("CreateWithID with properties: %+v, %v", im2, err)
	}
	if got, err := s.ViewImages(c, "os_distro", "superos"); err != nil || len(got) != 1 || got[0].ID != id2 {
		t.Fatalf("the property index after CreateWithID: %v, %v", got, err)
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

func TestChangeProperties(t *testing.T) {
	s := newStore(t)
	c := Caller{UID: 1000, GID: 1000}
	im, err := s.Create(c, "p")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.ChangeProperties(c, im.ID, []PropertyOp{
		{Key: "a", Value: "1"}, {Key: "b", Value: "2"}, {Key: "a", Remove: true},
		{Key: KeyName, Value: "p2"}, {Key: KeyMinRAM, Value: "64"},
	}); err != nil {
		t.Fatal(err)
	}
	got := s.Get(im.ID)
	if _, ok := got.Extra["a"]; ok || got.Extra["b"] != "2" || got.Name != "p2" || got.MinRAM != 64 || s.Lookup("p2") == nil || s.Lookup("p") != nil {
		t.Fatalf("after the ops: %+v", got)
	}
	// All or nothing: a refused op (last) leaves the earlier ones out.
	for _, ops := range [][]PropertyOp{
		{{Key: "c", Value: "3"}, {Key: KeyVisibility, Value: "public"}},
		{{Key: "c", Value: "3"}, {Key: "nope", Remove: true}},
		{{Key: "c", Value: "3"}, {Key: KeyChecksum, Value: "x"}},
		{{Key: "c", Value: "3"}, {Key: KeyProtected, Value: "true"}, {Key: "b", Remove: true}},
	} {
		if _, err := s.ChangeProperties(c, im.ID, ops); err == nil {
			t.Errorf("%v accepted", ops)
		}
		if after := s.Get(im.ID); after.Extra["c"] != "" || after.Protected || after.Extra["b"] != "2" {
			t.Fatalf("refused %v changed the image: %+v", ops, after)
		}
	}
	if _, err := s.ChangeProperties(Caller{UID: 2000, GID: 2000}, im.ID, []PropertyOp{{Key: "c", Value: "3"}}); !errors.Is(err, ErrPermission) {
		t.Fatalf("another uid: %v, want ErrPermission", err)
	}
}

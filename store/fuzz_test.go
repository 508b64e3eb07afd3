package store

import (
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/cockroachdb/pebble/v2/vfs"
)

// FuzzProperties drives SetProperty and RemoveProperty with keys and
// values from the fuzzer (any bytes: newlines, 0xff, NUL, '/', "..", '%',
// up to 64 KiB and past it), as the owner, another user and root, against
// an in-memory model of the image's properties. It checks that nothing
// panics, that a refused write fails with one of the store's errors and
// changes nothing (the same snapshot stays published), that an accepted
// write reads back, that the custom properties always equal the model's,
// and that the property index agrees with the records.
//
//	go test -run '^$' -fuzz FuzzProperties -fuzztime 1m ./store/
func FuzzProperties(f *testing.F) {
	f.Add(encodeOps(
		fuzzOp{op: 0, key: "os_distro", value: "superos"},
		fuzzOp{op: 0, key: "os_distro", value: "line1\nline2\n"},
		fuzzOp{op: 0, key: "k\xff\xfe", value: "v"},
		fuzzOp{op: 0, key: "..", value: "%2F%25"},
		fuzzOp{op: 0, key: "a/b", value: "x"},
		fuzzOp{op: 0, key: "min_ram", value: "0012"},
		fuzzOp{op: 0, key: "min_ram", value: "-1"},
		fuzzOp{op: 0, key: "name", value: "renamed\n"},
		fuzzOp{op: 0, key: "protected", value: "true"},
		fuzzOp{op: 1, key: "os_distro"},
		fuzzOp{op: 0, key: "protected", value: "false"},
		fuzzOp{op: 1, key: "os_distro"},
		fuzzOp{op: 0, key: "status", value: "active"},
		fuzzOp{op: 0, key: "checksum", value: "0"},
		fuzzOp{op: 0, key: "visibility", value: "public", caller: 1},
		fuzzOp{op: 0, key: "visibility", value: "public", caller: 2},
		fuzzOp{op: 0, key: "members", value: "1002\nnot a uid"},
		fuzzOp{op: 0, key: "x", value: "owned", caller: 1},
		fuzzOp{op: 0, key: "x", value: "\x00\x01\x00", mode: 1},
		fuzzOp{op: 0, key: "x", value: "again", mode: 1},
		fuzzOp{op: 0, key: "y", value: "replace", mode: 2},
	))
	f.Add(encodeOps(
		fuzzOp{op: 0, key: strings.Repeat("k", 255), value: strings.Repeat("v", 65535)},
		fuzzOp{op: 0, key: strings.Repeat("k", 256), value: "v"},
		fuzzOp{op: 0x80, key: "big", value: strings.Repeat("v", 40000)},
		fuzzOp{op: 0, key: "", value: "empty key"},
		fuzzOp{op: 0, key: "\u00a0\u200b", value: "unprintable"},
		fuzzOp{op: 0, key: "imagefs_kill_reason", value: "no"},
		fuzzOp{op: 1, key: "vhd_disk_type"},
		fuzzOp{op: 0, key: "os_glance_x", value: "no"},
	))
	f.Add([]byte{})
	f.Add([]byte{0, 0, 0, 3, 'a', '\n', 'b', 0, 2, 0xff, 0xff})

	dir := f.TempDir()
	// The catalog in memory: no fsync per commit, so the fuzzer runs
	// thousands of inputs a second rather than tens.
	s, err := Open(dir, Options{PropertyQuota: 8, catalogFS: vfs.NewMem()})
	if err != nil {
		f.Fatal(err)
	}
	f.Cleanup(func() { s.Close() })
	var n atomic.Int64

	f.Fuzz(func(t *testing.T, data []byte) {
		im, err := s.Create(alice, fmt.Sprintf("fuzz-%d", n.Add(1)))
		if err != nil {
			t.Fatal(err)
		}
		model := map[string]string{} // custom properties
		for _, op := range decodeOps(data) {
			before := s.Get(im.ID)
			c := []Caller{alice, bob, Root}[op.caller%3]
			if op.op%2 == 0 {
				err = s.SetProperty(c, im.ID, op.key, op.value, SetMode(op.mode%3))
			} else {
				err = s.RemoveProperty(c, im.ID, op.key)
			}
			after := s.Get(im.ID)
			if err != nil {
				if !storeError(err) {
					t.Fatalf("%+v: error %v is none of the store's", op, err)
				}
				if after != before {
					t.Fatalf("%+v refused (%v) but the record changed", op, err)
				}
				continue
			}
			if op.op%2 == 1 {
				if _, ok := after.Property(op.key); ok {
					t.Fatalf("%+v accepted but %q is still there", op, op.key)
				}
				delete(model, op.key)
			} else {
				got, ok := after.Property(op.key)
				if !ok || !sameValue(op.key, got, op.value) {
					t.Fatalf("%+v accepted but reads back %q (%v)", op, got, ok)
				}
				if !IsCoreKey(op.key) {
					model[op.key] = op.value
				}
			}
			if after.Owner != im.Owner || after.ID != im.ID || after.Status != im.Status {
				t.Fatalf("%+v changed owner, id or status: %+v", op, after)
			}
		}
		final := s.Get(im.ID)
		custom := map[string]string{}
		for k, v := range final.Extra {
			if !IsSystemKey(k) {
				custom[k] = v
			}
		}
		if !maps.Equal(custom, model) {
			t.Fatalf("custom properties %q, model %q", custom, model)
		}
		if err := s.CheckIndex(); err != nil {
			t.Fatal(err)
		}
		if final.Protected {
			if err := s.SetProperty(alice, im.ID, KeyProtected, "false", SetAny); err != nil {
				t.Fatal(err)
			}
		}
		if err := s.Delete(Root, im.ID); err != nil {
			t.Fatal(err)
		}
	})
}

// storeError reports whether err is one of the store's errors.
func storeError(err error) bool {
	for _, e := range []error{ErrNotFound, ErrExists, ErrImmutable, ErrPermission, ErrNotPermitted, ErrInvalid, ErrTooBig, ErrQuota} {
		if errors.Is(err, e) {
			return true
		}
	}
	return false
}

// sameValue reports whether a typed property read back as got was set
// to set (min_ram "0012" reads back as "12").
func sameValue(key, got, set string) bool {
	switch key {
	case KeyMinRAM, KeyMinDisk:
		a, _ := strconv.ParseInt(got, 10, 64)
		b, _ := strconv.ParseInt(set, 10, 64)
		return a == b
	}
	return got == set
}

type fuzzOp struct {
	op, caller, mode byte
	key, value       string
}

// Encoding: op (even: set, odd: remove; bit 7: the value twice), caller,
// mode, key length (1 byte), key, value length (2 bytes, big endian),
// value; a short tail ends the list.
func encodeOps(ops ...fuzzOp) []byte {
	var b []byte
	for _, o := range ops {
		b = append(b, o.op, o.caller, o.mode, byte(len(o.key)))
		b = append(b, o.key[:min(len(o.key), 255)]...)
		b = binary.BigEndian.AppendUint16(b, uint16(min(len(o.value), 65535)))
		b = append(b, o.value[:min(len(o.value), 65535)]...)
	}
	return b
}

func decodeOps(b []byte) []fuzzOp {
	var ops []fuzzOp
	for len(b) >= 4 && len(ops) < 100 {
		o := fuzzOp{op: b[0], caller: b[1], mode: b[2]}
		n := int(b[3])
		b = b[4:]
		if len(b) < n {
			n = len(b)
		}
		o.key, b = string(b[:n]), b[n:]
		if len(b) >= 2 {
			m := int(binary.BigEndian.Uint16(b))
			b = b[2:]
			m = min(m, len(b))
			o.value, b = string(b[:m]), b[m:]
		}
		if o.op&0x80 != 0 {
			o.value += o.value // values past 64 KiB
		}
		ops = append(ops, o)
	}
	return ops
}

package metrics

import (
	"reflect"
	"slices"
	"testing"

	"github.com/hanwen/go-fuse/v2/fuse"
	"github.com/prometheus/client_golang/prometheus"
)

// The op label values of imagefs_fuse_requests_total, as README and the
// dashboards know them. A new request method of fuse.RawFileSystem makes
// TestEveryRequestCounted fail until its label is added here.
var wantOps = []string{
	"access", "copy_file_range", "create", "fallocate", "flush", "forget", "fsync", "fsyncdir",
	"getattr", "getlk", "getxattr", "ioctl", "link", "listxattr", "lookup", "lseek", "mkdir",
	"mknod", "open", "opendir", "read", "readdir", "readdirplus", "readlink", "release",
	"releasedir", "removexattr", "rename", "rmdir", "setattr", "setlk", "setlkw", "setxattr",
	"statfs", "statx", "symlink", "tmpfile", "unlink", "write",
}

// Every request method of fuse.RawFileSystem, called once through the
// wrapper, counts one request of its operation: none passes through
// uncounted, and the labels are the FUSE opcode names.
func TestEveryRequestCounted(t *testing.T) {
	m := New()
	reg := prometheus.NewRegistry()
	reg.MustRegister(m)
	// go-fuse's default answers ENOSYS to every request; Writev's ENOSYS
	// is not counted (go-fuse then calls Write, which is).
	w := reflect.ValueOf(m.Wrap(fuse.NewDefaultRawFileSystem()))
	rt := reflect.TypeFor[fuse.RawFileSystem]()
	for i := range rt.NumMethod() {
		meth := rt.Method(i)
		switch meth.Name {
		case "String", "SetDebug", "Init", "OnUnmount":
			continue
		}
		var args []reflect.Value
		for j := range meth.Type.NumIn() {
			in := meth.Type.In(j)
			if in.Kind() == reflect.Pointer {
				args = append(args, reflect.New(in.Elem()))
			} else {
				args = append(args, reflect.Zero(in))
			}
		}
		w.MethodByName(meth.Name).Call(args)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, mf := range mfs {
		if mf.GetName() != "imagefs_fuse_requests_total" {
			continue
		}
		for _, s := range mf.GetMetric() {
			if v := s.GetCounter().GetValue(); v != 1 {
				t.Errorf("%v: %v requests, want 1", s.GetLabel(), v)
			}
			got = append(got, s.GetLabel()[0].GetValue())
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, wantOps) {
		t.Errorf("op labels counted:\n%q\nwant\n%q", got, wantOps)
	}
}

package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestApplyOptions(t *testing.T) {
	c := defaultMountConfig()
	// What mount(8) and mount.fuse3 pass for an fstab line.
	list := "rw,allow_other,nofail,_netdev,noatime,x-systemd.requires=local-fs.target,comment=imagefs,defaults,noauto,nosuid,nodev,dev,suid,ro,property_quota=64,member_quota=16,cache_nodes=5000,log_format=json,log_file=/var/log/imagefs.log,metrics-addr=127.0.0.1:9477,noexec,fsname=images,debug,foreground"
	if err := c.applyOptions(list); err != nil {
		t.Fatal(err)
	}
	want := &mountConfig{
		allowOther: true, readOnly: true, debug: true, foreground: true, quota: 64, memberQuota: 16,
		cacheNodes: 5000, source: "images", mountOpts: []string{"noexec"},
		logFormat: "json", logFile: "/var/log/imagefs.log", metricsAddr: "127.0.0.1:9477",
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("applyOptions(%q)\n got %+v\nwant %+v", list, c, want)
	}
	if err := c.check(); err != nil {
		t.Error(err)
	}
	// Later options win.
	if err := c.applyOptions("rw"); err != nil || c.readOnly {
		t.Errorf("ro then rw: readOnly %v, err %v", c.readOnly, err)
	}
}

func TestApplyOptionsErrors(t *testing.T) {
	for opt, want := range map[string]string{
		"bogus":              `unknown mount option "bogus"`,
		"property_quota=x":   "want a positive number",
		"property_quota=0":   "want a positive number",
		"property_quota":     "needs a value",
		"cache_nodes=-1":     "want a positive number",
		"log_file=":          "needs a value",
		"allow_root":         "not supported",
		"allow_other,ro,foo": `unknown mount option "foo"`,
	} {
		err := defaultMountConfig().applyOptions(opt)
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("applyOptions(%q) = %v, want an error with %q", opt, err, want)
		}
	}
	c := defaultMountConfig()
	c.applyOptions("log_format=xml")
	if err := c.check(); err == nil {
		t.Errorf("log_format=xml passed check")
	}
}

func TestParseHelperArgs(t *testing.T) {
	for _, tc := range []struct {
		args []string
		ok   bool
		want helperArgs
	}{
		// mount.fuse3's form.
		{[]string{"/var/lib/imagefs", "/mnt/images", "-o", "rw,allow_other,dev,suid"}, true,
			helperArgs{positional: []string{"/var/lib/imagefs", "/mnt/images"}, opts: []string{"rw,allow_other,dev,suid"}}},
		{[]string{"-oro", "-f", "s", "m"}, true,
			helperArgs{positional: []string{"s", "m"}, opts: []string{"ro"}, foreground: true}},
		{[]string{"-o", "ro", "--", "-s", "m"}, true,
			helperArgs{positional: []string{"-s", "m"}, opts: []string{"ro"}}},
		{[]string{"--help"}, true, helperArgs{help: true}},
		{[]string{"mout"}, false, helperArgs{}},              // a mistyped command
		{[]string{"a", "b", "c"}, false, helperArgs{}},       // too many
		{[]string{"s", "m", "-o"}, false, helperArgs{}},      // -o without a value
		{[]string{"s", "m", "--bogus"}, false, helperArgs{}}, // not the helper's flag
	} {
		got, ok := parseHelperArgs(tc.args)
		if ok != tc.ok || ok && !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseHelperArgs(%q) = %+v, %v; want %+v, %v", tc.args, got, ok, tc.want, tc.ok)
		}
	}
}

func TestListenMetricsLoopbackOnly(t *testing.T) {
	for _, addr := range []string{"0.0.0.0:0", ":0", "192.0.2.1:9477", "example.com:9477", "9477"} {
		if ln, err := listenMetrics(addr); err == nil {
			ln.Close()
			t.Errorf("listenMetrics(%q) accepted a non-loopback address", addr)
		}
	}
	for _, addr := range []string{"127.0.0.1:0", "localhost:0"} {
		ln, err := listenMetrics(addr)
		if err != nil {
			t.Errorf("listenMetrics(%q): %v", addr, err)
			continue
		}
		ln.Close()
	}
}

package main

import (
	"strings"
	"testing"
)

func TestAPIOptions(t *testing.T) {
	c := defaultMountConfig()
	if err := c.applyOptions("api_listen=127.0.0.1:9292,api_project=demo=1000,api_project=ops=2000,api_auth=noauth"); err != nil {
		t.Fatal(err)
	}
	if c.api.listen != "127.0.0.1:9292" || c.api.auth != "noauth" || c.api.projects["demo"] != 1000 || c.api.projects["ops"] != 2000 {
		t.Fatalf("api config: %+v", c.api)
	}
	if err := c.check(); err != nil {
		t.Fatal(err)
	}
	for opts, want := range map[string]string{
		"api_listen=0.0.0.0:9292":                     "loopback",
		"api_listen=10.0.0.1:9292":                    "loopback",
		"api_listen=127.0.0.1:9292,api_auth=keystone": "needs the Keystone settings",
		"api_listen=127.0.0.1:9292,api_auth=ldap":     "want keystone or noauth",
	} {
		c := defaultMountConfig()
		if err := c.applyOptions(opts); err != nil {
			t.Fatal(err)
		}
		if err := c.check(); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: %v, want an error naming %q", opts, err, want)
		}
	}
	for _, bad := range []string{"api_project=demo", "api_project=demo=x", "api_listen", "api_project==5"} {
		if err := defaultMountConfig().applyOptions(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
	// No API asked for: nothing checked.
	if err := defaultMountConfig().check(); err != nil {
		t.Fatal(err)
	}
	fc := defaultMountConfig()
	fl := mountFlags(fc, new([]string))
	if err := fl.Parse([]string{"--api-listen", "[::1]:9292", "--api-project", "demo=1000"}); err != nil {
		t.Fatal(err)
	}
	if fc.api.listen != "[::1]:9292" || fc.api.projects["demo"] != 1000 || fc.check() != nil {
		t.Fatalf("flags: %+v", fc.api)
	}
}

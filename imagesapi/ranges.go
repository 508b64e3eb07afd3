package imagesapi

import (
	"regexp"
	"strconv"
)

// reRange is webob's Range pattern (webob/byterange.py; a prefix match).
var reRange = regexp.MustCompile(`(?i)^bytes *= *(\d*) *- *(\d*)`)

// rangeRefusal is the message of a 416 for the Range header h of a
// download, or "" when http.ServeContent serves it (a range past the
// end is its 416, with Content-Range). Glance's refusals
// (glance/common/wsgi.py get_range_from_request): what webob's
// Range.parse does not take ("bytes=abc", "bytes=100-50") is "Invalid
// Range header."; a zero-length suffix ("bytes=-0", which webob reads
// as the whole file) is unsatisfiable (RFC 9110 14.1.1), not served
// with a Content-Range that ends before it starts.
func rangeRefusal(h string) string {
	m := reRange.FindStringSubmatch(h)
	switch {
	case m == nil, m[1] == "" && m[2] == "":
		return "Invalid Range header."
	case m[1] == "":
		if n, err := strconv.ParseUint(m[2], 10, 64); err == nil && n == 0 {
			return "Invalid Range header: a suffix of 0 bytes."
		}
	case m[2] != "":
		a, aerr := strconv.ParseUint(m[1], 10, 64)
		b, berr := strconv.ParseUint(m[2], 10, 64)
		if aerr == nil && berr == nil && a > b {
			return "Invalid Range header."
		}
	}
	return ""
}

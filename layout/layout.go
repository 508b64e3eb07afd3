// Package layout holds the names of the mount's layout (docs/layout.md)
// that both the daemon (package fs) and the programs reading a mount
// (imagefs ls) compute: the directory names of property values in
// by-property/<key>/ and the hidden .catalog directory. It imports only
// the standard library: a client of the mount links neither go-fuse, the
// daemon's metrics nor the catalog through it.
package layout

import "strings"

// CatalogDir is the hidden directory of the catalog files, the one-pass
// listings imagefs ls reads:
//
//	.catalog/images                              every image the reader sees listed
//	.catalog/by-property/<key>/<escaped value>   the images of by-property/<key>/<escaped value>/
//
// A catalog file holds one JSON object per line and image, sorted by name,
// with every property of the image as a string ({"id": "...", "name":
// "...", "size": "2560", ...}). Its content is made when it is opened, for
// the opener: the same images, by the same visibility rules (store.Visible,
// ViewList), as by-id/ and the view directory list for that user. Any
// key and escaped value resolve (a view no image is in gives an empty
// file), so a lookup tells nothing of other users' images.
//
// .catalog is not listed in the mount's root (find, du and rsync of the
// mount do not meet it); it is reached by its name. The files show size
// 0 and are read with direct I/O (nothing is shared through the page
// cache); read them to the end. fs/catalog.go serves them.
const CatalogDir = ".catalog"

// ViewName returns the directory name of property value v in
// by-property/<key>/: '%' becomes %25 and '/' %2F (as layout.md says),
// NUL %00, and the whole values "." and ".." %2E and %2E%2E, which cannot
// be names otherwise. Every other byte stays as it is.
func ViewName(v string) string {
	switch v {
	case ".":
		return "%2E"
	case "..":
		return "%2E%2E"
	}
	if !strings.ContainsAny(v, "%/\x00") {
		return v
	}
	var b strings.Builder
	for i := 0; i < len(v); i++ {
		switch v[i] {
		case '%':
			b.WriteString("%25")
		case '/':
			b.WriteString("%2F")
		case 0:
			b.WriteString("%00")
		default:
			b.WriteByte(v[i])
		}
	}
	return b.String()
}

// ParseViewName returns the value whose ViewName is name; ok is false when
// name is no value's ViewName (another spelling such as %2f or %41 does not
// alias a value).
func ParseViewName(name string) (v string, ok bool) {
	if !strings.Contains(name, "%") {
		return name, name != "." && name != ".."
	}
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		if name[i] != '%' {
			b.WriteByte(name[i])
			continue
		}
		if i+2 >= len(name) {
			return "", false
		}
		switch name[i+1 : i+3] {
		case "25":
			b.WriteByte('%')
		case "2F":
			b.WriteByte('/')
		case "00":
			b.WriteByte(0)
		case "2E":
			b.WriteByte('.')
		default:
			return "", false
		}
		i += 2
	}
	v = b.String()
	return v, ViewName(v) == name
}

// nameMax is NAME_MAX: the longest name of a directory entry, in bytes.
const nameMax = 255

// Listed reports whether value v has a directory in by-property/<key>/:
// not empty and a name of at most 255 bytes once escaped.
func Listed(v string) bool { return v != "" && len(ViewName(v)) <= nameMax }

// ListedKey reports whether key can be a directory name in by-property/.
func ListedKey(key string) bool { return key != "." && key != ".." && key != "" }

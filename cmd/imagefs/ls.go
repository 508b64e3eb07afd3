package main

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"

	"github.com/imagefs/imagefs/layout"
	"github.com/imagefs/imagefs/store"
	"github.com/spf13/pflag"
)

const lsHelp = `Usage: imagefs ls [OPTIONS] MOUNTPOINT

List the images of a mounted imagefs that you can see, one row per image,
as a table like 'glance image-list': name, id, status, size, created_at and
any --column asked for.

imagefs ls only reads the mounted filesystem, as any user may, in one
pass: with --property KEY=VALUE it reads the catalog file
MOUNTPOINT/.catalog/by-property/KEY/VALUE, the records of the images of
the view by-property/KEY/VALUE/ (answered from the catalog's index, in
time proportional to the matches, not to the catalog); without it,
MOUNTPOINT/.catalog/images, every image you see. The daemon fills them for
you by the visibility rules of the tree. Further --property filters are
checked against those records. A value that has no view directory
(empty, or longer than 255 bytes once '/' and '%' are escaped) is found
in .catalog/images.

A property an image does not have shows as empty (null in --json). In
--json, size, virtual_size, min_ram and min_disk are numbers,
protected and os_hidden booleans and tags a list of strings ([] for
none), as in Glance's image JSON; other values are strings.

Options:
`

const lsExamples = `
Sorting: values that are both integers (size, min_ram) compare as numbers,
others as strings; images without the property come last; ties go by name.

Exit status:
  0  listed (also when no image matches)
  1  the mount could not be read (the reason is on stderr)
  2  usage error

Examples:
  imagefs ls /mnt/images
  imagefs ls /mnt/images --property os_distro=superos
  imagefs ls /mnt/images -p os_distro=superos -p status=active --sort created_at:desc
  imagefs ls /mnt/images --column os_version --column min_ram --sort size:desc
  imagefs ls /mnt/images --property visibility=public --json | jq -r '.[].id'
`

func init() {
	register("ls", "list the images of a mount, filtered by properties", runLs)
}

// lsDefaultColumns are the columns of every listing, in order.
var lsDefaultColumns = []string{"name", "id", "status", "size", "created_at"}

type lsFilter struct{ key, value string }

type lsOptions struct {
	mnt      string
	filters  []lsFilter
	sortKey  string
	sortDesc bool
	columns  []string
	json     bool
}

func runLs(args []string) int {
	fl := pflag.NewFlagSet("ls", pflag.ContinueOnError)
	props := fl.StringArrayP("property", "p", nil, "only images with property KEY equal to VALUE: `KEY=VALUE` (repeatable; all must match)")
	sortBy := fl.StringP("sort", "s", "name:asc", "sort by a property: `KEY[:asc|desc]`")
	cols := fl.StringArrayP("column", "c", nil, "add a column for property `KEY` (repeatable)")
	asJSON := fl.Bool("json", false, "print a JSON array of objects (column -> value or null) instead of a table")
	help := fl.BoolP("help", "h", false, "show this help")
	fl.SetOutput(io.Discard)
	printHelp := func(w io.Writer) {
		fl.SetOutput(w)
		fmt.Fprint(w, lsHelp)
		printFlags(w, fl)
		fmt.Fprint(w, lsExamples)
	}
	usageErr := func(format string, a ...any) int {
		fmt.Fprintf(os.Stderr, "imagefs ls: "+format+"\n", a...)
		fmt.Fprintf(os.Stderr, "Try 'imagefs ls --help' for more information.\n")
		return 2
	}
	if err := fl.Parse(args); err != nil {
		return usageErr("%v", err)
	}
	if *help {
		printHelp(os.Stdout)
		return 0
	}
	if fl.NArg() != 1 {
		return usageErr("want one MOUNTPOINT, got %d arguments", fl.NArg())
	}
	o := lsOptions{mnt: fl.Arg(0), json: *asJSON}
	for _, p := range *props {
		k, v, ok := strings.Cut(p, "=")
		if !ok {
			return usageErr("--property %q: want KEY=VALUE", p)
		}
		if err := checkLsKey(k); err != nil {
			return usageErr("--property %q: %v", p, err)
		}
		o.filters = append(o.filters, lsFilter{k, v})
	}
	key, dir, _ := strings.Cut(*sortBy, ":")
	switch dir {
	case "", "asc":
	case "desc":
		o.sortDesc = true
	default:
		return usageErr("--sort %q: want KEY, KEY:asc or KEY:desc", *sortBy)
	}
	if err := checkLsKey(key); err != nil {
		return usageErr("--sort %q: %v", *sortBy, err)
	}
	o.sortKey = key
	o.columns = slices.Clone(lsDefaultColumns)
	for _, c := range *cols {
		if err := checkLsKey(c); err != nil {
			return usageErr("--column %q: %v", c, err)
		}
		if !slices.Contains(o.columns, c) {
			o.columns = append(o.columns, c)
		}
	}

	rows, err := lsRows(o)
	if err != nil {
		fmt.Fprintf(os.Stderr, "imagefs ls: %v\n", err)
		return 1
	}
	w := bufio.NewWriter(os.Stdout)
	if o.json {
		writeLsJSON(w, o.columns, rows)
	} else {
		writeLsTable(w, o.columns, rows)
	}
	if err := w.Flush(); err != nil {
		fmt.Fprintf(os.Stderr, "imagefs ls: %v\n", err)
		return 1
	}
	return 0
}

func checkLsKey(k string) error {
	if k == "" || k == "." || k == ".." || strings.ContainsAny(k, "/\x00") {
		return fmt.Errorf("%q is not a property key", k)
	}
	if len(k) > store.MaxKeyBytes {
		// user.KEY would exceed the kernel's 255-byte limit on attribute
		// names: no image can have it.
		return fmt.Errorf("key of %d bytes: property keys are at most %d bytes (user.KEY must fit the 255-byte limit on extended attribute names)", len(k), store.MaxKeyBytes)
	}
	return nil
}

// lsRow is one image: column values, nil when the image lacks the property.
type lsRow map[string]*string

// lsRows finds the images that pass every filter and reads their columns.
func lsRows(o lsOptions) ([]lsRow, error) {
	if fi, err := os.Stat(filepath.Join(o.mnt, "by-property")); err != nil || !fi.IsDir() {
		return nil, fmt.Errorf("%s is not an imagefs mount (no by-property/): %v", o.mnt, err)
	}
	records, err := lsCatalog(o.mnt, o.filters)
	if err != nil {
		return nil, err
	}
	need := slices.Clone(o.columns)
	if !slices.Contains(need, o.sortKey) {
		need = append(need, o.sortKey)
	}
	var rows []lsRow
next:
	for _, rec := range records {
		for _, f := range o.filters {
			if v, ok := rec[f.key]; !ok || v != f.value {
				continue next
			}
		}
		row := lsRow{}
		for _, k := range need {
			if v, ok := rec[k]; ok {
				row[k] = &v
			}
		}
		rows = append(rows, row)
	}
	sortLsRows(rows, o.sortKey, o.sortDesc)
	return rows, nil
}

// lsCatalog reads, in one pass, the records of the images the first
// filter admits (the catalog file of its view) or, without a usable first
// filter, of every image the caller sees: MOUNTPOINT/.catalog/ (see
// layout.CatalogDir), which the daemon fills for the caller by the rules of
// the tree.
func lsCatalog(mnt string, filters []lsFilter) ([]map[string]string, error) {
	path := filepath.Join(mnt, layout.CatalogDir, "images")
	if len(filters) > 0 && layout.Listed(filters[0].value) {
		path = filepath.Join(mnt, layout.CatalogDir, "by-property", filters[0].key, layout.ViewName(filters[0].value))
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	var out []map[string]string
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<30)
	for sc.Scan() {
		rec, err := parseCatalogLine(sc.Bytes())
		if err != nil {
			return nil, fmt.Errorf("%s: %v", path, err)
		}
		out = append(out, rec)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("%s: %v", path, err)
	}
	return out, nil
}

// parseCatalogLine decodes one catalog line, a JSON object of strings.
// Lines without a backslash (no escapes: most) are split directly, about
// ten times faster than encoding/json; the others go to encoding/json.
func parseCatalogLine(line []byte) (map[string]string, error) {
	rec := make(map[string]string, 16)
	if bytes.IndexByte(line, '\\') < 0 {
		str := func(i int) (string, int, bool) {
			if i >= len(line) || line[i] != '"' {
				return "", 0, false
			}
			j := bytes.IndexByte(line[i+1:], '"')
			if j < 0 {
				return "", 0, false
			}
			return string(line[i+1 : i+1+j]), i + j + 2, true
		}
		i := 1
		ok := len(line) >= 2 && line[0] == '{'
		for ok && i < len(line) && line[i] != '}' {
			var k, v string
			if k, i, ok = str(i); !ok || i >= len(line) || line[i] != ':' {
				ok = false
				break
			}
			if v, i, ok = str(i + 1); !ok || i >= len(line) {
				ok = false
				break
			}
			rec[k] = v
			if line[i] == ',' {
				i++
			}
		}
		if ok && i == len(line)-1 {
			return rec, nil
		}
		clear(rec)
	}
	if err := json.Unmarshal(line, &rec); err != nil {
		return nil, err
	}
	return rec, nil
}

// sortLsRows sorts by key: integers as numbers, strings otherwise;
// missing values last; ties by name, then id.
func sortLsRows(rows []lsRow, key string, desc bool) {
	str := func(p *string) string {
		if p == nil {
			return ""
		}
		return *p
	}
	slices.SortStableFunc(rows, func(a, b lsRow) int {
		va, vb := a[key], b[key]
		switch {
		case va == nil && vb == nil:
		case va == nil:
			return 1
		case vb == nil:
			return -1
		default:
			c := compareValues(*va, *vb)
			if desc {
				c = -c
			}
			if c != 0 {
				return c
			}
		}
		return cmp.Or(cmp.Compare(str(a["name"]), str(b["name"])), cmp.Compare(str(a["id"]), str(b["id"])))
	})
}

func compareValues(a, b string) int {
	if !maybeInt(a) || !maybeInt(b) { // ParseInt's errors cost an allocation each
		return cmp.Compare(a, b)
	}
	na, ea := strconv.ParseInt(a, 10, 64)
	nb, eb := strconv.ParseInt(b, 10, 64)
	if ea == nil && eb == nil {
		return cmp.Compare(na, nb)
	}
	return cmp.Compare(a, b)
}

// writeLsTable prints rows as a box table, as glance (prettytable) does.
// Control characters in values are shown escaped so a row stays one line.
func writeLsTable(w io.Writer, columns []string, rows []lsRow) {
	cell := func(r lsRow, c string) string {
		v := r[c]
		if v == nil {
			return ""
		}
		if strings.IndexFunc(*v, func(r rune) bool { return r < 0x20 || r == 0x7f }) >= 0 {
			q := strconv.Quote(*v)
			return q[1 : len(q)-1]
		}
		return *v
	}
	width := make([]int, len(columns))
	for i, c := range columns {
		width[i] = displayWidth(c)
		for _, r := range rows {
			width[i] = max(width[i], displayWidth(cell(r, c)))
		}
	}
	rule := func() {
		for _, n := range width {
			fmt.Fprint(w, "+", strings.Repeat("-", n+2))
		}
		fmt.Fprintln(w, "+")
	}
	line := func(cells []string) {
		for i, s := range cells {
			fmt.Fprint(w, "| ", s, strings.Repeat(" ", width[i]-displayWidth(s)+1))
		}
		fmt.Fprintln(w, "|")
	}
	rule()
	line(columns)
	rule()
	for _, r := range rows {
		cells := make([]string, len(columns))
		for i, c := range columns {
			cells[i] = cell(r, c)
		}
		line(cells)
	}
	rule()
}

func displayWidth(s string) int { return len([]rune(s)) }

// lsJSONTypes are the properties --json prints as numbers, booleans or
// (tags) a list of strings, as Glance's image JSON does; every other
// value is a string.
var lsJSONTypes = map[string]string{
	"size": "number", "virtual_size": "number", "min_ram": "number", "min_disk": "number",
	"protected": "bool", "os_hidden": "bool", "tags": "list",
}

// lsJSONValue returns the JSON of value v of column c: null when absent,
// a number or boolean for the typed properties when v is one, else a
// string.
func lsJSONValue(c string, v *string) []byte {
	if lsJSONTypes[c] == "list" { // tags: one per line; none: []
		l := []string{}
		if v != nil && *v != "" {
			l = strings.Split(*v, "\n")
		}
		b, _ := json.Marshal(l)
		return b
	}
	if v == nil {
		return []byte("null")
	}
	switch lsJSONTypes[c] {
	case "number":
		if _, err := strconv.ParseInt(*v, 10, 64); err == nil {
			return []byte(*v)
		}
	case "bool":
		if *v == "true" || *v == "false" {
			return []byte(*v)
		}
	}
	b, _ := json.Marshal(*v)
	return b
}

// writeLsJSON prints rows as a JSON array of objects whose keys are the
// columns, in column order; values as lsJSONValue gives them.
func writeLsJSON(w io.Writer, columns []string, rows []lsRow) {
	if len(rows) == 0 {
		fmt.Fprintln(w, "[]")
		return
	}
	fmt.Fprintln(w, "[")
	for i, r := range rows {
		fmt.Fprint(w, "  {")
		for j, c := range columns {
			k, _ := json.Marshal(c)
			v := lsJSONValue(c, r[c])
			if j > 0 {
				fmt.Fprint(w, ", ")
			}
			fmt.Fprintf(w, "%s: %s", k, v)
		}
		fmt.Fprint(w, "}")
		if i < len(rows)-1 {
			fmt.Fprint(w, ",")
		}
		fmt.Fprintln(w)
	}
	fmt.Fprintln(w, "]")
}

// maybeInt reports whether s may parse as a decimal integer: a digit, or
// a sign then a digit, first.
func maybeInt(s string) bool {
	if s != "" && (s[0] == '-' || s[0] == '+') {
		s = s[1:]
	}
	return s != "" && s[0] >= '0' && s[0] <= '9'
}

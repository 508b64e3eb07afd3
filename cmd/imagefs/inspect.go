package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"github.com/spf13/pflag"

	"github.com/imagefs/imagefs/vhd"
)

func init() {
	register("inspect", "check VHD files before upload: facts and findings", runInspect)
}

// runInspect is the imagefs inspect subcommand.
func runInspect(args []string) int { return inspectMain(args, os.Stdout, os.Stderr) }

func inspectHelp() string {
	var b strings.Builder
	b.WriteString(`Usage: imagefs inspect [--json] FILE...

Check VHD (Microsoft Virtual Hard Disk v1) files before upload: print the
facts of each disk and every problem found. These are the checks imagefs
makes when an upload is sealed, so a file that passes here is accepted.

For each FILE, inspect reads the footer, the footer copy at offset 0, the
dynamic disk header and the block allocation table, never the disk's data,
and prints the disk type, the virtual size (the footer's Current Size, which
becomes the image's virtual_size), the original size, the geometry and the
size it addresses, the creator application, version and host OS, the unique
id, the time stamp and the saved-state flag; for a dynamic disk also the
block size, the table entries and the allocated blocks. Then each finding,
as SEVERITY: RULE: MESSAGE, where SEVERITY is one of
  invalid  the file breaks the VHD specification; the upload is refused
  unsafe   a well-formed disk that imagefs refuses all the same
  warning  accepted, but some consumer may treat the disk differently

Options:
      --json   print a JSON array with one object per FILE, with snake_case
               keys (file, accepted, refusal, disk_type, virtual_size, ...,
               findings, error)
  -h, --help   show this help and exit

Exit status:
  0  every FILE is acceptable (warnings allowed)
  1  some FILE is invalid or unsafe
  2  usage error, or some FILE could not be read (this wins over 1)

Rules:
`)
	for _, r := range vhd.Rules() {
		fmt.Fprintf(&b, "  %-7s  %-28s %s\n", r.Severity, r.ID, r.Summary)
	}
	b.WriteString(`
Examples:
  imagefs inspect ubuntu-24.04.vhd
  imagefs inspect --json *.vhd | jq -r '.[] | select(.accepted | not) | .file'
`)
	return b.String()
}

// inspectMain runs imagefs inspect with args, writing to stdout and
// stderr, and returns the exit status.
func inspectMain(args []string, stdout, stderr io.Writer) int {
	flags := pflag.NewFlagSet("inspect", pflag.ContinueOnError)
	flags.SetOutput(io.Discard)
	asJSON := flags.Bool("json", false, "print a JSON array with one object per FILE")
	help := flags.BoolP("help", "h", false, "show this help and exit")
	if err := flags.Parse(args); err != nil {
		fmt.Fprintf(stderr, "imagefs inspect: %v\nTry 'imagefs inspect --help'.\n", err)
		return 2
	}
	if *help {
		fmt.Fprint(stdout, inspectHelp())
		return 0
	}
	files := flags.Args()
	if len(files) == 0 {
		fmt.Fprintf(stderr, "imagefs inspect: no FILE given\nUsage: imagefs inspect [--json] FILE...\nTry 'imagefs inspect --help'.\n")
		return 2
	}
	status := 0
	var reports []inspectReport
	for k, name := range files {
		info, err := inspectFile(name)
		rep := newInspectReport(name, info, err)
		switch {
		case err != nil:
			status = 2
			fmt.Fprintf(stderr, "imagefs inspect: %s: %v\n", name, err)
		case info.Refusal() != nil && status == 0:
			status = 1
		}
		if *asJSON {
			reports = append(reports, rep)
			continue
		}
		if err != nil {
			continue
		}
		if k > 0 {
			fmt.Fprintln(stdout)
		}
		printInfo(stdout, name, info)
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if reports == nil {
			reports = []inspectReport{}
		}
		if err := enc.Encode(reports); err != nil {
			fmt.Fprintf(stderr, "imagefs inspect: %v\n", err)
			return 2
		}
	}
	return status
}

// inspectFile opens name and runs vhd.Inspect on it.
func inspectFile(name string) (*vhd.Info, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, errors.New("not a regular file")
	}
	return vhd.Inspect(f, st.Size())
}

// printInfo writes the human report of one file.
func printInfo(w io.Writer, name string, info *vhd.Info) {
	verdict := "accepted"
	if r := info.Refusal(); r != nil {
		verdict = fmt.Sprintf("refused (%s: %s)", r.Severity, r.Rule)
	} else if n := len(info.Warnings()); n > 0 {
		verdict = fmt.Sprintf("accepted with %d warning%s", n, plural(n))
	}
	fmt.Fprintf(w, "%s: %s\n", name, verdict)
	if !info.Has("not-vhd") {
		row := func(k, format string, args ...any) {
			fmt.Fprintf(w, "  %-18s %s\n", k+":", fmt.Sprintf(format, args...))
		}
		row("disk type", "%s", info.DiskType)
		row("virtual size", "%s (Current Size)", sizeText(info.CurrentSize))
		row("original size", "%s", sizeText(info.OriginalSize))
		row("geometry", "%s C/H/S, %s", info.Geometry, sizeText(info.GeometrySize))
		row("creator", "\"%s\" version %s on \"%s\"", info.CreatorApplication, info.CreatorVersionString(), info.CreatorHostOS)
		row("unique id", "%s", info.UniqueIDString())
		row("timestamp", "%s", info.Timestamp.UTC().Format(time.RFC3339))
		row("saved state", "%s", yesNo(info.SavedState))
		if d := info.Dynamic; d != nil {
			row("block size", "%s", sizeText(uint64(d.BlockSize)))
			row("table entries", "%d", d.MaxTableEntries)
			row("allocated blocks", "%d", d.AllocatedBlocks)
			if info.DiskType == vhd.DiskTypeDifferencing {
				row("parent", "%s (%s)", d.ParentName, vhd.FormatUUID(d.ParentUniqueID))
			}
		}
	}
	for _, f := range info.Findings {
		fmt.Fprintf(w, "  %s\n", f)
	}
}

// sizeText renders a byte count exactly and in IEC units: "41943040 bytes
// (40 MiB)", "10000384 bytes (9.54 MiB)".
func sizeText(n uint64) string {
	units := []string{"KiB", "MiB", "GiB", "TiB", "PiB", "EiB"}
	if n < 1024 {
		return fmt.Sprintf("%d bytes", n)
	}
	v, u := float64(n)/1024, 0
	for v >= 1024 && u < len(units)-1 {
		v /= 1024
		u++
	}
	if n%(1<<(10*(u+1))) == 0 {
		return fmt.Sprintf("%d bytes (%d %s)", n, n>>(10*(u+1)), units[u])
	}
	return fmt.Sprintf("%d bytes (%.2f %s)", n, v, units[u])
}

func plural(n int) string {
	if n == 1 {
		return ""
	}
	return "s"
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}

// inspectReport is the JSON form of one file's inspection.
type inspectReport struct {
	File       string        `json:"file"`
	Accepted   bool          `json:"accepted"`
	Refusal    *vhd.Finding  `json:"refusal"`
	Error      string        `json:"error,omitempty"`
	*jsonFacts               // omitted when the file is not a VHD or unreadable
	Findings   []vhd.Finding `json:"findings"`
}

type jsonFacts struct {
	DiskType           string       `json:"disk_type"`
	VirtualSize        uint64       `json:"virtual_size"`
	CurrentSize        uint64       `json:"current_size"`
	OriginalSize       uint64       `json:"original_size"`
	Geometry           jsonGeometry `json:"geometry"`
	GeometrySize       uint64       `json:"geometry_size"`
	CreatorApplication string       `json:"creator_application"`
	CreatorVersion     string       `json:"creator_version"`
	CreatorHostOS      string       `json:"creator_host_os"`
	UniqueID           string       `json:"unique_id"`
	Timestamp          string       `json:"timestamp"`
	SavedState         bool         `json:"saved_state"`
	Dynamic            *jsonDynamic `json:"dynamic,omitempty"`
}

type jsonGeometry struct {
	Cylinders       uint16 `json:"cylinders"`
	Heads           uint8  `json:"heads"`
	SectorsPerTrack uint8  `json:"sectors_per_track"`
}

type jsonDynamic struct {
	HeaderOffset    uint64 `json:"header_offset"`
	TableOffset     uint64 `json:"table_offset"`
	MaxTableEntries uint32 `json:"max_table_entries"`
	BlockSize       uint32 `json:"block_size"`
	AllocatedBlocks uint32 `json:"allocated_blocks"`
	ParentName      string `json:"parent_name,omitempty"`
	ParentUniqueID  string `json:"parent_unique_id,omitempty"`
}

func newInspectReport(name string, info *vhd.Info, err error) inspectReport {
	rep := inspectReport{File: name, Findings: []vhd.Finding{}}
	if err != nil {
		rep.Error = err.Error()
		return rep
	}
	rep.Refusal = info.Refusal()
	rep.Accepted = rep.Refusal == nil
	if info.Findings != nil {
		rep.Findings = info.Findings
	}
	if info.Has("not-vhd") {
		return rep
	}
	g := info.Geometry
	rep.jsonFacts = &jsonFacts{
		DiskType:           info.DiskType.String(),
		VirtualSize:        info.CurrentSize,
		CurrentSize:        info.CurrentSize,
		OriginalSize:       info.OriginalSize,
		Geometry:           jsonGeometry{g.Cylinders, g.Heads, g.SectorsPerTrack},
		GeometrySize:       info.GeometrySize,
		CreatorApplication: info.CreatorApplication,
		CreatorVersion:     info.CreatorVersionString(),
		CreatorHostOS:      info.CreatorHostOS,
		UniqueID:           info.UniqueIDString(),
		Timestamp:          info.Timestamp.UTC().Format(time.RFC3339),
		SavedState:         info.SavedState,
	}
	if d := info.Dynamic; d != nil {
		rep.Dynamic = &jsonDynamic{
			HeaderOffset:    d.HeaderOffset,
			TableOffset:     d.TableOffset,
			MaxTableEntries: d.MaxTableEntries,
			BlockSize:       d.BlockSize,
			AllocatedBlocks: d.AllocatedBlocks,
		}
		if info.DiskType == vhd.DiskTypeDifferencing {
			rep.Dynamic.ParentName = d.ParentName
			rep.Dynamic.ParentUniqueID = vhd.FormatUUID(d.ParentUniqueID)
		}
	}
	return rep
}

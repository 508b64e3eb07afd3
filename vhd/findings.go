package vhd

import (
	"fmt"
)

// Severity ranks a Finding: how imagefs treats a file that breaks a rule.
// Invalid covers breaches of the VHD spec (§Hard Disk Footer Format,
// §Dynamic Disk Header Format, §Block Allocation Table and Data Blocks);
// Unsafe and Warning are imagefs's upload policy. The zero value is not a
// valid severity.
type Severity int

const (
	// Warning marks a disk that is accepted but that some consumer may
	// treat differently from another (size by geometry, Azure's whole-MiB
	// rule, flags that should not be set on an upload).
	Warning Severity = iota + 1
	// Unsafe marks a well-formed disk that imagefs refuses because using
	// it would reach outside the file (a differencing disk names a parent
	// on some host) or identify it ambiguously (an all-zero Unique Id).
	Unsafe
	// Invalid marks bytes that break the VHD specification: the upload is
	// refused.
	Invalid
)

// String returns "warning", "unsafe" or "invalid", or "severity(N)".
func (s Severity) String() string {
	switch s {
	case Warning:
		return "warning"
	case Unsafe:
		return "unsafe"
	case Invalid:
		return "invalid"
	}
	return fmt.Sprintf("severity(%d)", int(s))
}

// MarshalText encodes s as its String form, so JSON shows "invalid" rather
// than 3. It fails for a value outside Warning..Invalid.
func (s Severity) MarshalText() ([]byte, error) {
	if s < Warning || s > Invalid {
		return nil, fmt.Errorf("vhd: unknown severity %d", int(s))
	}
	return []byte(s.String()), nil
}

// UnmarshalText decodes "warning", "unsafe" or "invalid".
func (s *Severity) UnmarshalText(b []byte) error {
	for v := Warning; v <= Invalid; v++ {
		if string(b) == v.String() {
			*s = v
			return nil
		}
	}
	return fmt.Errorf("vhd: unknown severity %q", b)
}

// Finding is one problem found in a VHD file. Its Message names the VHD
// spec field at fault by its spec name (§Hard Disk Footer Format, §Dynamic
// Disk Header Format, §Block Allocation Table and Data Blocks).
type Finding struct {
	Severity Severity `json:"severity"`
	// Rule is a stable short kebab-case id (see Rules), for example
	// "footer-checksum"; callers may match on it.
	Rule string `json:"rule"`
	// Message is one sentence naming the problem with its numbers, for
	// example "fixed disk file is 1048064 bytes, want Current Size 1048576
	// + 512". Its wording may change; match on Rule.
	Message string `json:"message"`
}

// String returns "severity: rule: message".
func (f Finding) String() string {
	return fmt.Sprintf("%s: %s: %s", f.Severity, f.Rule, f.Message)
}

// Rule describes one check that Inspect makes on the structures of the VHD
// spec (§Hard Disk Footer Format, §Dynamic Disk Header Format, §Block
// Allocation Table and Data Blocks, Appendix: CHS Calculation).
type Rule struct {
	ID       string
	Severity Severity
	Summary  string // what the rule refuses or warns about, one line
}

// rules lists every rule id Inspect can report, in a stable order.
var rules = []Rule{
	{"not-vhd", Invalid, "no \"conectix\" cookie in the tail footer nor in the head footer copy at offset 0"},
	{"footer-missing", Invalid, "the head footer copy is there but the tail footer is not: truncated or padded upload"},
	{"footer-checksum", Invalid, "Hard Disk Footer Checksum does not match the footer bytes"},
	{"footer-features", Invalid, "Features lacks the reserved bit 0x2 or has unknown bits"},
	{"footer-version", Invalid, "File Format Version is not 0x00010000"},
	{"disk-type", Invalid, "Disk Type is not fixed (2), dynamic (3) or differencing (4)"},
	{"current-size-zero", Invalid, "Current Size is zero"},
	{"current-size-unaligned", Invalid, "Current Size is not a multiple of 512"},
	{"current-size-too-large", Invalid, "Current Size is over the 2040 GiB VHD limit"},
	{"fixed-data-offset", Invalid, "a fixed disk's Data Offset is not 0xFFFFFFFFFFFFFFFF"},
	{"fixed-size-mismatch", Invalid, "a fixed disk file is not Current Size + 512 bytes"},
	{"file-size-unaligned", Invalid, "a dynamic disk file size is not a multiple of 512"},
	{"footer-copy-mismatch", Invalid, "a dynamic disk's head footer copy at offset 0 differs from the tail footer"},
	{"header-offset", Invalid, "the dynamic header (footer Data Offset) is outside the file or overlaps a footer"},
	{"header-cookie", Invalid, "the dynamic header Cookie is not \"cxsparse\""},
	{"header-checksum", Invalid, "the dynamic header Checksum does not match its bytes"},
	{"header-version", Invalid, "the dynamic header Header Version is not 0x00010000"},
	{"header-data-offset", Invalid, "the dynamic header Data Offset is not 0xFFFFFFFFFFFFFFFF"},
	{"block-size", Invalid, "Block Size is not a power of two of at least 512"},
	{"table-too-small", Invalid, "Max Table Entries cannot cover Current Size"},
	{"table-too-large", Invalid, "the Block Allocation Table is larger than the file"},
	{"table-out-of-bounds", Invalid, "the Block Allocation Table does not lie before the tail footer"},
	{"table-overlap", Invalid, "the Block Allocation Table overlaps the head footer copy or the dynamic header"},
	{"block-out-of-bounds", Invalid, "an allocated block does not lie before the tail footer"},
	{"block-overlaps-metadata", Invalid, "an allocated block overlaps the head footer copy, the dynamic header or the table"},
	{"block-overlap", Invalid, "two allocated blocks overlap"},
	{"differencing-disk", Unsafe, "a differencing disk depends on a parent file on some host"},
	{"parent-locator-out-of-bounds", Unsafe, "a Parent Locator Entry points outside the file"},
	{"zero-unique-id", Unsafe, "Unique Id is all zeros"},
	{"geometry-mismatch", Warning, "Disk Geometry gives a size other than Current Size: readers may disagree on the disk size"},
	{"size-not-mib-aligned", Warning, "Current Size is not a whole number of MiB: Azure refuses such disks"},
	{"table-oversized", Warning, "Max Table Entries is larger than Current Size needs"},
	{"temporary-disk", Warning, "Features has the temporary bit 0x1 set"},
	{"saved-state", Warning, "Saved State is set: the disk was captured from a saved virtual machine"},
	{"future-timestamp", Warning, "Time Stamp is in the future"},
}

// Rules returns every rule Inspect can report, with its severity, in a
// stable order. The caller may modify the returned slice.
func Rules() []Rule {
	return append([]Rule(nil), rules...)
}

// severityOf returns the severity of rule id; it panics on an unknown id,
// which is a programming error in this package.
func severityOf(id string) Severity {
	for _, r := range rules {
		if r.ID == id {
			return r.Severity
		}
	}
	panic("vhd: unknown rule " + id)
}

// add appends a finding for rule id with a formatted message.
func (i *Info) add(id, format string, args ...any) {
	i.Findings = append(i.Findings, Finding{Severity: severityOf(id), Rule: id, Message: fmt.Sprintf(format, args...)})
}

// Refusal returns the reason the upload must be refused: the first Invalid
// finding (a breach of the VHD spec), else the first Unsafe one, else nil
// when the disk is acceptable. The returned pointer refers to a copy.
func (i *Info) Refusal() *Finding {
	for _, s := range []Severity{Invalid, Unsafe} {
		for _, f := range i.Findings {
			if f.Severity == s {
				f := f
				return &f
			}
		}
	}
	return nil
}

// Warnings returns the Warning findings (accepted disks that some consumer
// may read differently, e.g. VHD spec Appendix: CHS Calculation vs Current
// Size), in order; nil when there are none.
func (i *Info) Warnings() []Finding {
	var w []Finding
	for _, f := range i.Findings {
		if f.Severity == Warning {
			w = append(w, f)
		}
	}
	return w
}

// Has reports whether a finding with rule id (see Rules) was made.
func (i *Info) Has(id string) bool {
	for _, f := range i.Findings {
		if f.Rule == id {
			return true
		}
	}
	return false
}

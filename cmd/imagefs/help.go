package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/spf13/pflag"
)

// printFlags writes fl's visible flags as a Linux tool's help does:
//
//	-o, --options OPTS      what it does, wrapped at 79 columns
//
// with the value name from a `backquoted` word of the usage and the
// default when it is not the zero value.
func printFlags(w io.Writer, fl *pflag.FlagSet) {
	type row struct{ left, right string }
	var rows []row
	width := 0
	fl.VisitAll(func(f *pflag.Flag) {
		if f.Hidden {
			return
		}
		name, usage := pflag.UnquoteUsage(f)
		left := "      --" + f.Name
		if f.Shorthand != "" {
			left = "  -" + f.Shorthand + ", --" + f.Name
		}
		if f.Value.Type() != "bool" {
			if name == "" || name == "string" || name == "int" || name == "stringArray" {
				name = "VALUE"
			}
			left += " " + name
		}
		switch f.Value.Type() {
		case "bool", "stringArray":
		default:
			if f.DefValue != "" && f.DefValue != "0" {
				usage += fmt.Sprintf(" (default %s)", f.DefValue)
			}
		}
		rows = append(rows, row{left, usage})
		width = max(width, len(left))
	})
	width += 2
	for _, r := range rows {
		fmt.Fprintf(w, "%-*s%s\n", width, r.left, wrap(r.right, width, 79))
	}
}

// wrap breaks s into lines of at most limit columns, continuing at
// column indent.
func wrap(s string, indent, limit int) string {
	var b strings.Builder
	col := indent
	for i, word := range strings.Fields(s) {
		if i > 0 {
			if col+1+len(word) > limit {
				b.WriteString("\n" + strings.Repeat(" ", indent))
				col = indent
			} else {
				b.WriteByte(' ')
				col++
			}
		}
		b.WriteString(word)
		col += len(word)
	}
	return b.String()
}

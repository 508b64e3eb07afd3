package fs

import (
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// TestErrnoTableComplete: every exported error of package store (a
// package-level var named Err*, in any of its files) has a row in
// errnoMap, so that none falls through toErrno to EIO unnoticed. It
// reads the sources: an error added to store without a row fails here.
func TestErrnoTableComplete(t *testing.T) {
	fset := token.NewFileSet()
	var storeErrs []string
	files, err := filepath.Glob(filepath.Join("..", "store", "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("store sources: %v (%d files)", err, len(files))
	}
	for _, name := range files {
		if strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, name, nil, parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range f.Decls {
			g, ok := d.(*ast.GenDecl)
			if !ok || g.Tok != token.VAR {
				continue
			}
			for _, s := range g.Specs {
				for _, id := range s.(*ast.ValueSpec).Names {
					if strings.HasPrefix(id.Name, "Err") {
						storeErrs = append(storeErrs, id.Name)
					}
				}
			}
		}
	}
	src, err := os.ReadFile("errno.go")
	if err != nil {
		t.Fatal(err)
	}
	f, err := parser.ParseFile(fset, "errno.go", src, parser.SkipObjectResolution)
	if err != nil {
		t.Fatal(err)
	}
	var rows []string
	ast.Inspect(f, func(n ast.Node) bool {
		vs, ok := n.(*ast.ValueSpec)
		if !ok || len(vs.Names) != 1 || vs.Names[0].Name != "errnoMap" {
			return true
		}
		ast.Inspect(vs, func(n ast.Node) bool {
			if sel, ok := n.(*ast.SelectorExpr); ok {
				if x, ok := sel.X.(*ast.Ident); ok && x.Name == "store" {
					rows = append(rows, sel.Sel.Name)
				}
			}
			return true
		})
		return false
	})
	if len(storeErrs) < 10 || len(rows) == 0 {
		t.Fatalf("found %d store errors and %d errnoMap rows: the parse missed them", len(storeErrs), len(rows))
	}
	for _, e := range storeErrs {
		if !slices.Contains(rows, e) {
			t.Errorf("store.%s has no row in errnoMap (fs/errno.go): toErrno maps it to EIO", e)
		}
	}
}

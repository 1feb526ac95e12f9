package main

import (
	"bytes"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// maxPackageLines bounds a package's non-test code: a package past it is
// two concerns that want to be split.
const maxPackageLines = 4500

// sourceFiles returns the module's non-test Go files by directory,
// leaving out nested modules.
func sourceFiles(t *testing.T) map[string][]string {
	t.Helper()
	dirs := map[string][]string{}
	err := filepath.WalkDir(".", func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if path != "." && (strings.HasPrefix(d.Name(), ".") || d.Name() == "testdata" || d.Name() == "node_modules") {
				return filepath.SkipDir
			}
			if _, err := os.Stat(filepath.Join(path, "go.mod")); err == nil && path != "." {
				return filepath.SkipDir // a nested module
			}
			return nil
		}
		if strings.HasSuffix(path, ".go") && !strings.HasSuffix(path, "_test.go") {
			dirs[filepath.Dir(path)] = append(dirs[filepath.Dir(path)], path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(dirs["proxy"]) == 0 || len(dirs[filepath.Join("proxy", "internal", "wire")]) == 0 {
		t.Fatal("proxy or proxy/internal/wire not found: run from the module root")
	}
	return dirs
}

// No package reaches into another's internals by the linker, and none
// uses unsafe: gorilla serves the client leg through its public API only.
func TestNoLinknameOrUnsafe(t *testing.T) {
	t.Parallel()
	for _, files := range sourceFiles(t) {
		for _, path := range files {
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(src, []byte("//go:linkname")) {
				t.Errorf("%s: go:linkname", path)
			}
			f, err := parser.ParseFile(token.NewFileSet(), path, src, parser.ImportsOnly)
			if err != nil {
				t.Fatal(err)
			}
			for _, imp := range f.Imports {
				if imp.Path.Value == `"unsafe"` {
					t.Errorf("%s: imports unsafe", path)
				}
			}
		}
	}
}

// No package is over maxPackageLines lines of non-test code.
func TestPackageSize(t *testing.T) {
	t.Parallel()
	for dir, files := range sourceFiles(t) {
		lines := 0
		for _, path := range files {
			src, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			lines += bytes.Count(src, []byte("\n"))
		}
		if lines > maxPackageLines {
			t.Errorf("%s: %d lines of non-test code; at most %d", dir, lines, maxPackageLines)
		}
	}
}

// Only the wire package looks beneath a socket: nothing else type-asserts
// a net.Conn to a concrete socket type (*wire.Conn, *tls.Conn,
// *net.TCPConn, ...), so that which layer a leg has is wire's business.
func TestOnlyWireAssertsSocketTypes(t *testing.T) {
	t.Parallel()
	wireDir := filepath.Join("proxy", "internal", "wire")
	for dir, files := range sourceFiles(t) {
		if dir == wireDir {
			continue
		}
		for _, path := range files {
			fset := token.NewFileSet()
			f, err := parser.ParseFile(fset, path, nil, 0)
			if err != nil {
				t.Fatal(err)
			}
			check := func(typ ast.Expr) {
				star, ok := typ.(*ast.StarExpr)
				if !ok {
					return
				}
				sel, ok := star.X.(*ast.SelectorExpr)
				if !ok {
					return
				}
				if name := sel.Sel.Name; name == "Conn" || strings.HasSuffix(name, "Conn") {
					t.Errorf("%s: asserts a socket to *%s.%s", fset.Position(typ.Pos()), sel.X, name)
				}
			}
			ast.Inspect(f, func(n ast.Node) bool {
				switch x := n.(type) {
				case *ast.TypeAssertExpr:
					if x.Type != nil {
						check(x.Type)
					}
				case *ast.TypeSwitchStmt:
					for _, s := range x.Body.List {
						for _, typ := range s.(*ast.CaseClause).List {
							check(typ)
						}
					}
				}
				return true
			})
		}
	}
}

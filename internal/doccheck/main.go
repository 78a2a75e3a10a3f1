// Command doccheck lists the exported identifiers of the given package
// directories that have no doc comment: functions and methods of exported
// types, types, constants, variables and struct fields (a field is
// documented by a comment above it or at the end of its line, or by the
// comment above the group of fields on consecutive lines it is part of).
// It exits 1 if it found any; make lint runs it.
//
//	go run ./internal/doccheck engine segment ...
package main

import (
	"fmt"
	"go/ast"
	"go/parser"
	"go/token"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

func main() {
	var missing []string
	for _, dir := range os.Args[1:] {
		m, err := check(dir)
		if err != nil {
			fmt.Fprintln(os.Stderr, "doccheck:", err)
			os.Exit(2)
		}
		missing = append(missing, m...)
	}
	sort.Strings(missing)
	for _, m := range missing {
		fmt.Println(m)
	}
	if len(missing) > 0 {
		fmt.Printf("doccheck: %d exported identifiers without a doc comment\n", len(missing))
		os.Exit(1)
	}
}

// check returns what is undocumented in the non-test files of dir.
func check(dir string) ([]string, error) {
	fset := token.NewFileSet()
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	var out []string
	report := func(pos token.Pos, what string) {
		out = append(out, fmt.Sprintf("%s: %s", fset.Position(pos), what))
	}
	for _, e := range ents {
		name := e.Name()
		if e.IsDir() || !strings.HasSuffix(name, ".go") || strings.HasSuffix(name, "_test.go") {
			continue
		}
		f, err := parser.ParseFile(fset, filepath.Join(dir, name), nil, parser.ParseComments)
		if err != nil {
			return nil, err
		}
		if f.Name.Name == "main" {
			continue
		}
		for _, d := range f.Decls {
			switch d := d.(type) {
			case *ast.FuncDecl:
				if d.Name.IsExported() && d.Doc == nil && (d.Recv == nil || exportedRecv(d.Recv)) {
					report(d.Pos(), "func "+d.Name.Name)
				}
			case *ast.GenDecl:
				checkGen(fset, d, report)
			}
		}
	}
	return out, nil
}

func checkGen(fset *token.FileSet, d *ast.GenDecl, report func(token.Pos, string)) {
	for _, s := range d.Specs {
		switch s := s.(type) {
		case *ast.TypeSpec:
			if !s.Name.IsExported() {
				continue
			}
			if s.Doc == nil && d.Doc == nil {
				report(s.Pos(), "type "+s.Name.Name)
			}
			st, ok := s.Type.(*ast.StructType)
			if !ok {
				continue
			}
			// A field is documented by its own comment, or by the comment
			// above a group of fields it belongs to: the fields that
			// follow a documented one on the very next lines.
			prevEnd, prevDoc := -1, false
			for _, fl := range st.Fields.List {
				line := fset.Position(fl.Pos()).Line
				if fl.Doc != nil {
					line = fset.Position(fl.Doc.Pos()).Line
				}
				doc := fl.Doc != nil || fl.Comment != nil || prevDoc && line == prevEnd+1
				prevEnd, prevDoc = fset.Position(fl.End()).Line, doc
				for _, n := range fl.Names {
					if n.IsExported() && !doc {
						report(n.Pos(), "field "+s.Name.Name+"."+n.Name)
					}
				}
			}
		case *ast.ValueSpec:
			for _, n := range s.Names {
				if n.IsExported() && s.Doc == nil && d.Doc == nil && s.Comment == nil {
					report(n.Pos(), n.Name)
				}
			}
		}
	}
}

// exportedRecv reports whether a method's receiver type is exported.
func exportedRecv(r *ast.FieldList) bool {
	t := r.List[0].Type
	if s, ok := t.(*ast.StarExpr); ok {
		t = s.X
	}
	switch x := t.(type) {
	case *ast.IndexExpr:
		t = x.X
	case *ast.IndexListExpr:
		t = x.X
	}
	if id, ok := t.(*ast.Ident); ok {
		return id.IsExported()
	}
	return true
}

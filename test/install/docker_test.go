package install

import (
	"debug/elf"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestImageBuild checks what can be checked of the image without a container engine: the
// Dockerfile's final stage is distroless/static running as non-root, and the binary built
// the way its build stage builds it is static (no ELF interpreter, no shared libraries),
// so it runs on an image without libc.
func TestImageBuild(t *testing.T) {
	df := readFile(t, filepath.Join(repoRoot, "Dockerfile"))
	var froms []string
	for _, m := range regexp.MustCompile(`(?m)^FROM\s+(?:--platform=\S+\s+)?(\S+)`).FindAllStringSubmatch(df, -1) {
		froms = append(froms, m[1])
	}
	if len(froms) < 2 || !strings.HasPrefix(froms[0], "golang:") || froms[len(froms)-1] != "gcr.io/distroless/static:nonroot" {
		t.Errorf("Dockerfile stages %v: want a golang builder and gcr.io/distroless/static:nonroot last", froms)
	}
	for _, want := range []string{"CGO_ENABLED=0", "-trimpath", `USER 65532:65532`, `ENTRYPOINT ["/callback-router"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile lacks %s", want)
		}
	}

	f, err := elf.Open(binary(t)) // built with CGO_ENABLED=0 -trimpath, as in the Dockerfile
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary has an ELF interpreter: it is dynamically linked")
		}
	}
	if libs, err := f.ImportedLibraries(); err != nil || len(libs) > 0 {
		t.Errorf("the binary needs shared libraries %v (err %v)", libs, err)
	}
}

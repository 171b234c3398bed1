package policy

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/open-policy-agent/opa/v1/ast"
)

// Config says where the policy sources are.
type Config struct {
	// FS holds the policy sources: *.rego files anywhere under it
	// (tests, *_test.rego, are left out when serving).
	FS fs.FS
	// Dir, if set, is read instead of FS, with os.DirFS semantics except:
	// entries whose name starts with "." are skipped (the Kubernetes
	// ConfigMap "..data" and "..2026_…" directories, but also .git and
	// editor files), and symbolic links to files are followed, so a ConfigMap
	// mount loads each file once, through its top-level link. The top-level
	// links into ..data/ are all read through one resolution of ..data, so a
	// load sees one ConfigMap version even while the kubelet swaps it.
	Dir string
	// RequireTests refuses a policy whose Rego tests (*_test.rego) fail, or
	// that has none: New fails, and Reload keeps the policy in service and
	// reports the failing tests (file:line:col of each) as its error.
	RequireTests bool
	// DecisionCacheSlots sizes the exact decision cache (rounded up to a power
	// of two); 0 is the default, 65,536; negative turns it off. A policy that
	// calls a non-deterministic built-in is never cached.
	DecisionCacheSlots int
	// Evaluator chooses how Decide evaluates data.crmauthz.decision (see
	// internal/policy/irvm): EvaluatorAuto (the default) runs OPA's plan of the policy with
	// the IR interpreter when the policy can be planned and uses nothing the
	// interpreter lacks, else topdown; EvaluatorTopdown always uses topdown;
	// EvaluatorIR refuses a policy the interpreter cannot run.
	Evaluator Evaluator
	// EvalTimeout bounds every evaluation (a decision, a batch's check, a
	// gateway decision, a Data API query, a list scope): past it the
	// evaluation stops with ErrEvalTimeout, a deny. 0 is DefaultEvalTimeout;
	// negative is an error (limits.go, docs/policies.md).
	EvalTimeout time.Duration
}

// Evaluator names an evaluator of the decision (Config.Evaluator).
type Evaluator string

// The evaluators.
const (
	EvaluatorAuto    Evaluator = ""
	EvaluatorTopdown Evaluator = "topdown"
	EvaluatorIR      Evaluator = "ir"
)

// sourceFile is one policy file.
type sourceFile struct {
	rel  string // path relative to the root, with '/' separators
	name string // name used in locations and messages (Dir joined for Config.Dir)
	src  []byte
}

func (f sourceFile) isTest() bool {
	return strings.HasSuffix(f.rel, "_test.rego")
}

// readSources reads every *.rego file of the configured source, sorted by path.
func readSources(cfg Config) ([]sourceFile, error) {
	if cfg.Dir == "" {
		if cfg.FS == nil {
			return nil, errors.New("policy: no source configured (Config.FS or Config.Dir)")
		}
		return walkSources(cfg.FS, "", "")
	}
	fi, err := os.Stat(cfg.Dir)
	if err != nil {
		return nil, fmt.Errorf("policy directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("policy directory %s: not a directory", cfg.Dir)
	}
	// A ConfigMap update swaps ..data and then removes the old directory: a
	// read that races with it fails, and the next attempt sees the new one.
	for attempt := 0; ; attempt++ {
		files, err := walkSources(os.DirFS(cfg.Dir), cfg.Dir, configMapData(cfg.Dir))
		if err == nil || attempt == 2 {
			return files, err
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// configMapData resolves dir/..data, the link a Kubernetes ConfigMap volume
// swaps atomically on an update; "" when there is none.
func configMapData(dir string) string {
	link := filepath.Join(dir, "..data")
	if fi, err := os.Lstat(link); err != nil || fi.Mode()&fs.ModeSymlink == 0 {
		return ""
	}
	resolved, err := filepath.EvalSymlinks(link)
	if err != nil {
		return ""
	}
	return resolved
}

// walkSources reads the *.rego files of fsys. dir is the directory fsys
// reads (for file names in messages; "" for an fs.FS). dataDir is the resolved
// ConfigMap ..data directory, if any: top-level links into ..data/ are read
// from it, so all files come from the same ConfigMap version even when the
// kubelet swaps ..data during the walk.
func walkSources(fsys fs.FS, dir, dataDir string) ([]sourceFile, error) {
	var files []sourceFile
	err := fs.WalkDir(fsys, ".", func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p == "." {
			return nil
		}
		if strings.HasPrefix(d.Name(), ".") {
			// "..data", "..2026_11_27_01.1" (ConfigMap), ".git", editor files
			if d.IsDir() {
				return fs.SkipDir
			}
			return nil
		}
		if d.IsDir() || !strings.HasSuffix(d.Name(), ".rego") {
			return nil
		}
		var src []byte
		switch {
		case d.Type()&fs.ModeSymlink != 0:
			// follow links to files (ConfigMap: authz.rego -> ..data/authz.rego),
			// never links to directories
			src, err = readLink(fsys, p, dir, dataDir)
			if err != nil || src == nil {
				return err
			}
		case d.Type().IsRegular():
			if src, err = fs.ReadFile(fsys, p); err != nil {
				return err
			}
		default:
			return nil
		}
		name := p
		if dir != "" {
			name = filepath.Join(dir, filepath.FromSlash(p))
		}
		files = append(files, sourceFile{rel: p, name: name, src: src})
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("reading policies: %w", err)
	}
	slices.SortFunc(files, func(a, b sourceFile) int { return strings.Compare(a.rel, b.rel) })
	return files, nil
}

// readLink reads the file a symbolic link points to; nil, nil when it points
// to something else than a regular file.
func readLink(fsys fs.FS, p, dir, dataDir string) ([]byte, error) {
	if dataDir != "" && !strings.Contains(p, "/") {
		if target, err := os.Readlink(filepath.Join(dir, p)); err == nil {
			if rest, ok := strings.CutPrefix(filepath.ToSlash(target), "..data/"); ok {
				return readRegular(filepath.Join(dataDir, filepath.FromSlash(rest)))
			}
		}
	}
	fi, err := fs.Stat(fsys, p)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, nil
	}
	return fs.ReadFile(fsys, p)
}

func readRegular(name string) ([]byte, error) {
	fi, err := os.Stat(name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil
	}
	return os.ReadFile(name)
}

// revisionOf is the first 16 hex digits of a SHA-256 over the sorted names and
// contents of files.
func revisionOf(files []sourceFile) string {
	h := sha256.New()
	var n [8]byte
	for _, f := range files {
		binary.BigEndian.PutUint64(n[:], uint64(len(f.rel)))
		h.Write(n[:])
		h.Write([]byte(f.rel))
		binary.BigEndian.PutUint64(n[:], uint64(len(f.src)))
		h.Write(n[:])
		h.Write(f.src)
	}
	return hex.EncodeToString(h.Sum(nil))[:16]
}

// fingerprintOf identifies a set of sources, tests included (unlike the
// revision, which covers the served files only).
func fingerprintOf(files []sourceFile) string {
	return revisionOf(files)
}

// parseModules parses files as Rego v1.
func parseModules(files []sourceFile) (map[string]*ast.Module, error) {
	mods := make(map[string]*ast.Module, len(files))
	var errs ast.Errors
	for _, f := range files {
		m, err := ast.ParseModuleWithOpts(f.name, string(f.src), ast.ParserOptions{
			RegoVersion:       ast.RegoV1,
			ProcessAnnotation: true,
		})
		if err != nil {
			var aerrs ast.Errors
			if errors.As(err, &aerrs) {
				errs = append(errs, aerrs...)
				continue
			}
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		if m == nil {
			errs = append(errs, ast.NewError(ast.ParseErr, &ast.Location{File: f.name, Row: 1, Col: 1}, "empty module"))
			continue
		}
		if err := guardModule(m); err != nil { // limits.go
			return nil, fmt.Errorf("%s: %w", f.name, err)
		}
		mods[f.name] = m
	}
	if len(errs) > 0 {
		return nil, &CompileError{Errors: errs}
	}
	return mods, nil
}

// newCompiler returns a compiler that knows the crm.* built-ins.
func newCompiler(printStatements bool) *ast.Compiler {
	caps := ast.CapabilitiesForThisVersion()
	caps.Builtins = append(caps.Builtins, BuiltinDecls()...)
	return ast.NewCompiler().
		WithCapabilities(caps).
		WithDefaultRegoVersion(ast.RegoV1).
		WithEnablePrintStatements(printStatements).
		WithUseTypeCheckAnnotations(true)
}

// compileModules compiles mods; the errors come back as a *CompileError.
func compileModules(mods map[string]*ast.Module, printStatements bool) (*ast.Compiler, error) {
	c := newCompiler(printStatements)
	if c.Compile(mods); c.Failed() {
		return nil, &CompileError{Errors: c.Errors}
	}
	return c, nil
}

// decisionRef is data.crmauthz.decision, the entry point of the policy.
func decisionRef() ast.Ref {
	return ast.MustParseRef("data.crmauthz.decision")
}

// checkEntryPoint fails when the policy does not define data.crmauthz.decision.
func checkEntryPoint(c *ast.Compiler) error {
	if len(c.GetRulesExact(decisionRef())) == 0 {
		return errors.New("policy: no rule data.crmauthz.decision (the entry point) is defined")
	}
	return nil
}

// CompileError is a policy that does not parse or compile. Its message has
// one line per problem, "file:line:col: code: message".
type CompileError struct {
	Errors ast.Errors
}

func (e *CompileError) Error() string {
	var b strings.Builder
	for i, err := range e.Errors {
		if i > 0 {
			b.WriteByte('\n')
		}
		if loc := err.Location; loc != nil {
			file := loc.File
			if file == "" {
				file = "<input>"
			}
			fmt.Fprintf(&b, "%s:%d:%d: ", file, loc.Row, loc.Col)
		}
		b.WriteString(err.Code)
		b.WriteString(": ")
		b.WriteString(err.Message)
		if err.Details != nil {
			for _, l := range err.Details.Lines() {
				b.WriteString("\n\t")
				b.WriteString(l)
			}
		}
	}
	return b.String()
}

// Unwrap gives errors.As access to the ast.Errors.
func (e *CompileError) Unwrap() error { return e.Errors }

// loadedPolicy is a compiled policy set.
type loadedPolicy struct {
	revision string
	compiler *ast.Compiler
	modules  map[string]*ast.Module
}

// load reads, parses and compiles the sources; tests are left out unless
// withTests.
func load(cfg Config, withTests bool, printStatements bool) (*loadedPolicy, error) {
	files, err := readSources(cfg)
	if err != nil {
		return nil, err
	}
	return loadFiles(cfg, files, withTests, printStatements)
}

// loadFiles parses and compiles files (read from cfg's source); tests are
// left out unless withTests.
func loadFiles(cfg Config, files []sourceFile, withTests bool, printStatements bool) (*loadedPolicy, error) {
	if !withTests {
		files = slices.DeleteFunc(slices.Clone(files), sourceFile.isTest)
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("policy: no .rego files in %s", sourceName(cfg))
	}
	mods, err := parseModules(files)
	if err != nil {
		return nil, err
	}
	c, err := compileModules(mods, printStatements)
	if err != nil {
		return nil, err
	}
	return &loadedPolicy{revision: revisionOf(files), compiler: c, modules: mods}, nil
}

// sourceName names cfg's source in messages.
func sourceName(cfg Config) string {
	if cfg.Dir != "" {
		return cfg.Dir
	}
	return "Config.FS"
}

// refOf returns data.<path...>.
func refOf(p []string) ast.Ref {
	ref := make(ast.Ref, 0, len(p)+1)
	ref = append(ref, ast.DefaultRootDocument)
	for _, s := range p {
		ref = append(ref, ast.StringTerm(s))
	}
	return ref
}

// joinPath is the cache key of a Data API path.
func joinPath(p []string) string {
	var b strings.Builder
	for _, s := range p {
		b.WriteByte(0)
		b.WriteString(s)
	}
	return b.String()
}

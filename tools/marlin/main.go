// Command marlin is the tool for Marlin databases: load tests (bench) and,
// as they are built, inspection and maintenance subcommands.
//
// The CLI uses the standard flag package with one FlagSet per subcommand:
// no dependency, predictable parsing, and each subcommand's --help lists
// exactly its own flags with an example.
package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/debug"
	"sort"
	"strings"
)

type command struct {
	summary string
	run     func(args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"bench": {"run a load test on a temporary (or given) database", runBench},
	"scale": {"the large-scale run (make bench-billion): load, restart, cold and hot phases at each size", runScale},
	"serve": {"serve a data directory to memcached clients (text and binary protocols)", runServe},

	"inspect":    {"summarize a data directory: segments, keys, index, snapshot, disk and RAM", tidied(runInspect)},
	"dump":       {"print every live pair (tsv, jsonl, hex), or one segment's raw records", tidied(runDump)},
	"verify":     {"check every record, the index and the snapshot; --repair a torn tail or the index", tidied(runVerify)},
	"get":        {"print one key's value", tidied(runGet)},
	"ttl":        {"print how long a key has left before it expires", tidied(runTTL)},
	"exists":     {"count which of some keys are present (exit 1 if any is not)", tidied(runExists)},
	"keys":       {"list the keys, optionally those matching a glob", tidied(runKeys)},
	"put":        {"set one key (optionally with a TTL)", tidied(runPut)},
	"delete":     {"delete one key", tidied(runDelete)},
	"load":       {"bulk-import pairs from tsv, jsonl or hex files or stdin", tidied(runLoad)},
	"compact":    {"run a full compaction pass", tidied(runCompact)},
	"checkpoint": {"write a consistent copy of a data directory", tidied(runCheckpoint)},
	"bundle":     {"build, inspect, verify and read bundles (immutable files of pairs, docs/bundle.md)", tidied(runBundle)},
}

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	switch {
	case len(args) == 0:
		usage(stderr)
		return 2
	case args[0] == "version" || args[0] == "--version" || args[0] == "-version":
		fmt.Fprintln(stdout, versionLine())
		return 0
	case args[0] == "help" && len(args) > 1:
		// marlin help CMD [SUB]: what marlin CMD [SUB] --help prints, on
		// stdout (asked for, so not an error).
		if _, ok := commands[args[1]]; !ok {
			fmt.Fprintf(stderr, "marlin help: unknown command %q\n\n", args[1])
			usage(stderr)
			return 2
		}
		return run(append(append([]string{}, args[1:]...), "--help"), stdout, stdout)
	case args[0] == "-h" || args[0] == "--help" || args[0] == "help":
		usage(stdout)
		return 0
	}
	cmd, ok := commands[args[0]]
	if !ok {
		fmt.Fprintf(stderr, "marlin: unknown command %q\n\n", args[0])
		usage(stderr)
		return 2
	}
	if wantsHelp(args[1:]) {
		stderr = stdout // help asked for is output, not an error
	}
	if err := cmd.run(args[1:], stdout, stderr); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		if errors.Is(err, errSilent) {
			return 1 // the output said it
		}
		// An engine error that names the operation ("checkpoint: ...")
		// is not prefixed with the command's name twice.
		fmt.Fprintf(stderr, "marlin %s: %s\n", args[0], strings.TrimPrefix(err.Error(), args[0]+": "))
		if isFlagError(err) {
			fmt.Fprintf(stderr, "Run 'marlin help %s' for its flags.\n", args[0])
			return 2
		}
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: marlin <command> [flags] [args]")
	fmt.Fprintln(w, "\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'marlin help <command>' for a command's flags and an example;")
	fmt.Fprintln(w, "'marlin version' prints the version.")
}

// versionLine describes the binary from its build information: the
// module version (a tag when installed with go install ...@vX), the commit
// and its time when built from a checkout, and the Go version.
func versionLine() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "marlin (no build information)"
	}
	s := "marlin " + bi.Main.Version
	var rev, at string
	modified := false
	for _, kv := range bi.Settings {
		switch kv.Key {
		case "vcs.revision":
			rev = kv.Value
		case "vcs.time":
			at = kv.Value
		case "vcs.modified":
			modified = kv.Value == "true"
		}
	}
	if rev != "" {
		s += ", commit " + rev[:min(12, len(rev))]
		if modified {
			s += " (modified)"
		}
		if at != "" {
			s += " of " + at
		}
	}
	return s + ", " + bi.GoVersion
}

// newFlagSet returns a FlagSet whose usage, when help is asked for, shows
// the synopsis, an example and the flags on w (run passes stdout as the
// command's stderr then). A parse error is not followed by the usage: the
// flag package's own message is swallowed and run prints the error once,
// with a pointer to the help.
func newFlagSet(name, synopsis, example string, w io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("marlin "+name, flag.ContinueOnError)
	var seen errSeen
	fs.SetOutput(&seen)
	fs.Usage = func() {
		if seen.seen {
			seen.seen = false // a parse error, reported by run
			return
		}
		fmt.Fprintf(w, "usage: marlin %s %s\n\nexample:\n  %s\n", name, synopsis, example)
		n := 0
		fs.VisitAll(func(*flag.Flag) { n++ })
		if n > 0 {
			fmt.Fprintf(w, "\nflags:\n")
			fs.SetOutput(w)
			fs.PrintDefaults()
			fs.SetOutput(&seen)
		}
	}
	return fs
}

// errSeen notes that the flag package wrote an error message (it does so
// just before it calls Usage for a parse error, not for -help).
type errSeen struct{ seen bool }

func (e *errSeen) Write(p []byte) (int, error) {
	e.seen = true
	return len(p), nil
}

// wantsHelp reports whether a command's arguments ask for help (-h,
// -help or --help before any "--").
func wantsHelp(args []string) bool {
	for _, a := range args {
		switch a {
		case "--":
			return false
		case "-h", "-help", "--help":
			return true
		}
	}
	return false
}

// isFlagError reports whether err is the flag package's parse error.
func isFlagError(err error) bool {
	for _, p := range []string{"flag provided but not defined", "invalid value ", "invalid boolean ", "flag needs an argument", "bad flag syntax"} {
		if strings.HasPrefix(err.Error(), p) {
			return true
		}
	}
	return false
}

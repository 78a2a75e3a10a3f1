package main

import (
	"bytes"
	"fmt"
	"io"
	"regexp"
	"sort"
	"strings"
)

// marlin completion bash|zsh|fish prints a shell completion script: the
// commands, and each command's flags (read from its own --help, so the
// script never disagrees with the binary that wrote it); other words
// complete as file names.

func runCompletion(args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("completion", "bash|zsh|fish\n\nPrints a completion script for the shell. To load it:\n"+
		"  bash: source <(marlin completion bash)       (or save it in /etc/bash_completion.d/marlin)\n"+
		"  zsh:  source <(marlin completion zsh)        (after compinit)\n"+
		"  fish: marlin completion fish | source         (or save it in ~/.config/fish/completions/marlin.fish)",
		"marlin completion bash > /etc/bash_completion.d/marlin", stderr)
	pos, err := parseArgs(fs, args)
	if err != nil {
		return err
	}
	if err := wantArgs(pos, 1, 1, "bash, zsh or fish"); err != nil {
		return err
	}
	cmds := completionTable()
	switch pos[0] {
	case "bash":
		writeBash(stdout, cmds)
	case "zsh":
		fmt.Fprintln(stdout, "autoload -U +X bashcompinit && bashcompinit")
		writeBash(stdout, cmds)
	case "fish":
		writeFish(stdout, cmds)
	default:
		return fmt.Errorf("unknown shell %q (want bash, zsh or fish)", pos[0])
	}
	return nil
}

type completionCmd struct {
	name, summary string
	flags         []string
}

var helpFlag = regexp.MustCompile(`(?m)^  -([A-Za-z0-9][A-Za-z0-9-]*)`)

// completionTable lists every command with its flags, from its --help.
func completionTable() []completionCmd {
	var out []completionCmd
	for name, c := range commands {
		var help bytes.Buffer
		if name != "completion" {
			_ = c.run([]string{"--help"}, io.Discard, &help)
		}
		cc := completionCmd{name: name, summary: c.summary}
		for _, m := range helpFlag.FindAllStringSubmatch(help.String(), -1) {
			cc.flags = append(cc.flags, "--"+m[1])
		}
		out = append(out, cc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].name < out[j].name })
	return out
}

func writeBash(w io.Writer, cmds []completionCmd) {
	names := make([]string, 0, len(cmds))
	for _, c := range cmds {
		names = append(names, c.name)
	}
	fmt.Fprintf(w, `# marlin completion (bash; zsh through bashcompinit)
_marlin() {
	local cur=${COMP_WORDS[COMP_CWORD]}
	if [ "$COMP_CWORD" -eq 1 ]; then
		COMPREPLY=($(compgen -W "%s help version" -- "$cur"))
		return
	fi
	local flags=""
	case ${COMP_WORDS[1]} in
`, strings.Join(names, " "))
	for _, c := range cmds {
		if len(c.flags) > 0 {
			fmt.Fprintf(w, "\t%s) flags=%q ;;\n", c.name, strings.Join(c.flags, " "))
		}
	}
	fmt.Fprint(w, `	help) COMPREPLY=($(compgen -W "`+strings.Join(names, " ")+`" -- "$cur")); return ;;
	esac
	if [[ $cur == -* ]]; then
		COMPREPLY=($(compgen -W "$flags" -- "$cur"))
	else
		COMPREPLY=($(compgen -f -- "$cur"))
	fi
}
complete -o filenames -F _marlin marlin
`)
}

func writeFish(w io.Writer, cmds []completionCmd) {
	fmt.Fprintln(w, "# marlin completion (fish)")
	fmt.Fprintln(w, "complete -c marlin -f -n __fish_use_subcommand -a 'help version' -d 'help, or the version'")
	for _, c := range cmds {
		fmt.Fprintf(w, "complete -c marlin -f -n __fish_use_subcommand -a %s -d %s\n", c.name, fishQuote(c.summary))
		for _, f := range c.flags {
			fmt.Fprintf(w, "complete -c marlin -n '__fish_seen_subcommand_from %s' -l %s\n", c.name, strings.TrimPrefix(f, "--"))
		}
	}
}

// fishQuote quotes s for fish in single quotes.
func fishQuote(s string) string {
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

// Registered here, not in the commands literal: the table reads
// commands, and a literal that referred to it would be an initialization
// cycle.
func init() {
	commands["completion"] = command{"print a shell completion script (bash, zsh, fish)", runCompletion}
}

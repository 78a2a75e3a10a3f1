package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestCompletionBash sources the bash script in a real bash and asks it
// to complete a command and a flag.
func TestCompletionBash(t *testing.T) {
	bash, err := exec.LookPath("bash")
	require.NoError(t, err)
	script := filepath.Join(t.TempDir(), "marlin.bash")
	require.NoError(t, os.WriteFile(script, []byte(mustRun(t, "completion", "bash").stdout), 0o644))
	complete := func(words ...string) string {
		cmd := "source " + script + "; COMP_WORDS=(" + strings.Join(words, " ") + "); COMP_CWORD=" +
			strconv.Itoa(len(words)-1) + "; _marlin; echo ${COMPREPLY[@]}"
		out, err := exec.Command(bash, "-c", cmd).CombinedOutput()
		require.NoError(t, err, string(out))
		return strings.TrimSpace(string(out))
	}
	require.Equal(t, "get", complete("marlin", "ge"))
	require.Equal(t, "--raw", complete("marlin", "get", "--ra"))
	require.Equal(t, "--max-conns --max-disk --max-item-size", complete("marlin", "serve", "--max-"))
	require.Equal(t, "ttl", complete("marlin", "help", "tt"))

	fish := mustRun(t, "completion", "fish").stdout
	require.Contains(t, fish, "complete -c marlin -n '__fish_seen_subcommand_from get' -l raw\n")
	zsh := mustRun(t, "completion", "zsh").stdout
	require.True(t, strings.HasPrefix(zsh, "autoload -U +X bashcompinit && bashcompinit\n"))
	r := marlin(t, "completion", "tcsh")
	require.Equal(t, 1, r.code)
	require.Contains(t, r.stderr, "want bash, zsh or fish")
}

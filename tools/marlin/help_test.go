package main

import (
	"strings"
	"testing"

	"github.com/stretchr/testify/require"
)

// TestHelpAndVersion: help asked for goes to stdout and exits 0; marlin
// help CMD prints what CMD --help does; no command at all is an error
// (usage on stderr, exit 2); version and --version print one line.
func TestHelpAndVersion(t *testing.T) {
	for _, args := range [][]string{{"help"}, {"--help"}, {"-h"}} {
		r := marlin(t, args...)
		require.Equal(t, 0, r.code, args)
		require.Contains(t, r.stdout, "usage: marlin <command>", args)
		require.Empty(t, r.stderr, args)
	}
	r := marlin(t)
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, "usage: marlin <command>")

	for _, cmd := range [][]string{{"get"}, {"checkpoint"}, {"bundle", "build"}} {
		h := marlin(t, append([]string{"help"}, cmd...)...)
		require.Equal(t, 0, h.code, cmd)
		require.Contains(t, h.stdout, "usage: marlin "+strings.Join(cmd, " "), cmd)
		require.Empty(t, h.stderr, cmd)
		direct := marlin(t, append(cmd, "--help")...)
		require.Equal(t, h.stdout, direct.stdout+direct.stderr, "marlin help %s and marlin %[1]s --help agree", cmd)
	}
	r = marlin(t, "help", "nope")
	require.Equal(t, 2, r.code)
	require.Contains(t, r.stderr, `unknown command "nope"`)

	for _, v := range []string{"version", "--version"} {
		r := marlin(t, v)
		require.Equal(t, 0, r.code)
		require.Regexp(t, `^marlin \S+.*, go1\.\d+`, r.stdout)
		require.Equal(t, 1, strings.Count(r.stdout, "\n"))
	}
}

// TestBadFlagReportedOnce: a bad flag is one message and a pointer to the
// help (exit 2), not the message twice and the whole usage.
func TestBadFlagReportedOnce(t *testing.T) {
	r := marlin(t, "get", "--nope", "x", "y")
	require.Equal(t, 2, r.code)
	require.Empty(t, r.stdout)
	require.Equal(t, "marlin get: flag provided but not defined: -nope\nRun 'marlin help get' for its flags.\n", r.stderr)
	r = marlin(t, "dump", "--format")
	require.Equal(t, 2, r.code)
	require.Equal(t, "marlin dump: flag needs an argument: -format\nRun 'marlin help dump' for its flags.\n", r.stderr)
}

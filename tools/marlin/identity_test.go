package main

import "github.com/marlinkv/marlin/internal/testhooks"

// Every database these tests create gets the same identity and hash key,
// so that iteration order, and with it the golden transcripts, are the
// same on every run (a real database's key is random).
func init() { testhooks.IdentityRand = testhooks.Fixed{} }

// Package testhooks holds hooks with which tests in this module make
// choices that are random in production deterministic. Being internal, it
// cannot be imported from outside the module, so no user of Marlin can
// weaken what it protects.
package testhooks

import "io"

// IdentityRand, when not nil, replaces crypto/rand as the source of a new
// database's identity: its id and its secret hash key. The CLI's golden
// transcripts set it so that iteration order (which follows the keyed
// hash) is the same on every run. Set it only before opening databases.
var IdentityRand io.Reader

// Fixed is an io.Reader that yields the same non-zero byte pattern from
// the start of every Read, for IdentityRand: every database created
// through it gets the same id and hash key.
type Fixed struct{}

// Read fills p with a fixed pattern.
func (Fixed) Read(p []byte) (int, error) {
	for i := range p {
		p[i] = byte(0x5a + 31*i)
	}
	return len(p), nil
}

package server

import "github.com/marlinkv/marlin/keynorm"

// Key normalization (Config.Normalizer, marlin serve --normalize-keys):
// every key a client names, in every protocol, is rewritten to its
// canonical form (package keynorm) before it reaches the engine, so
// equivalent composite keys share one item. Replies name the key as the
// client sent it (clients match replies by key). A key whose canonical
// form is over 250 bytes, or that does not decode, is refused with a
// CLIENT_ERROR line (text and meta; a storage command's data block is
// read and dropped first) or an "Invalid arguments" status (binary).

// normalizer is the part of keynorm.Normalizer the server uses.
type normalizer interface {
	Append(dst, key []byte) ([]byte, error)
}

var _ normalizer = (*keynorm.Normalizer)(nil)

// storeKey returns the key the engine stores for the client's key k:
// k itself without a normalizer, else its canonical form in dst (reused;
// callers keep dst only when there is a normalizer, so a connection's
// buffer never aliases a line).
func (s *Server) storeKey(dst, k []byte) ([]byte, error) {
	if s.cfg.Normalizer == nil {
		return k, nil
	}
	return s.cfg.Normalizer.Append(dst[:0], k)
}

// keyError is the reply line for a key that does not normalize.
func keyError(err error) string { return "CLIENT_ERROR " + oneLine(err.Error()) }

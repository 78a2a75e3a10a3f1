package engine

import (
	"fmt"
	"sync"
)

// Key normalization (Options.KeyNormalizer): every key given to a read or
// write method is first rewritten to its canonical form, so equivalent
// keys (a composite key's parts in another order, say) name one entry.
// The index and the log hold only canonical keys: iterators, Dump and
// Verify show them, and a normalizer must therefore be given every time
// the directory is opened for writing (opening without it reads the
// canonical keys as they are).

// KeyNormalizer rewrites a key to its canonical form. Append appends the
// canonical form of key to dst; it must be deterministic and idempotent
// (normalizing a canonical key returns it unchanged). keynorm.Normalizer
// is one.
type KeyNormalizer interface {
	Append(dst, key []byte) ([]byte, error)
}

// keyBufs holds the buffers normalized keys are built in; a key lives in
// one only for the call that normalized it.
var keyBufs = sync.Pool{New: func() any { b := make([]byte, 0, 256); return &b }}

// keyBufMax: buffers that grew past it are not kept.
const keyBufMax = 4 << 10

// normKey returns the key db stores for key: key itself without a
// normalizer, else its canonical form in a pooled buffer that the caller
// gives back with putKeyBuf once it no longer uses the key.
func (db *DB) normKey(key []byte) ([]byte, *[]byte, error) {
	n := db.opts.KeyNormalizer
	if n == nil {
		return key, nil, nil
	}
	bp := keyBufs.Get().(*[]byte)
	k, err := n.Append((*bp)[:0], key)
	if err != nil {
		putKeyBuf(bp)
		return nil, nil, fmt.Errorf("marlin: normalize key: %w", err)
	}
	*bp = k
	return k, bp, nil
}

func putKeyBuf(bp *[]byte) {
	if bp != nil && cap(*bp) <= keyBufMax {
		*bp = (*bp)[:0]
		keyBufs.Put(bp)
	}
}

// normBatch returns a copy of b with canonical keys (Write never changes
// the caller's batch).
func (db *DB) normBatch(b *Batch) (*Batch, error) {
	nb := &Batch{ops: make([]batchOp, 0, len(b.ops)), data: make([]byte, 0, len(b.data))}
	var kb []byte
	for i := range b.ops {
		op := &b.ops[i]
		var err error
		kb, err = db.opts.KeyNormalizer.Append(kb[:0], b.key(op))
		if err != nil {
			return nil, fmt.Errorf("marlin: normalize key: %w", err)
		}
		nb.add(op.kind, kb, b.value(op), op.ttl)
	}
	return nb, nil
}

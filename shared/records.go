package shared

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The store's record values. Lengths and counts are varints; every
// decoder checks what it reads against the record's length and returns
// ErrBadRecord, never panics. The layouts are drawn in
// docs/shared-values.md.

// tagRef marks a key record as a reference; the tag's low 6 bits are the
// expiry level the key was counted under (grid.go; 0 without expiry).
const (
	tagRef    = 0x80
	tagLevels = 0x3f
)

// keyRec is a decoded key record. Its slices alias the record.
type keyRec struct {
	ref   bool
	level uint8
	value []byte // inline: the whole value
	pre   []byte // ref: the per-key prefix
	h     hash   // ref: the shared data's hash
}

// parseKeyRec decodes a key record.
func parseKeyRec(b []byte) (keyRec, error) {
	if len(b) == 0 || b[0]&^(tagRef|tagLevels) != 0 {
		return keyRec{}, fmt.Errorf("%w: key record tag", ErrBadRecord)
	}
	r := keyRec{ref: b[0]&tagRef != 0, level: b[0] & tagLevels}
	b = b[1:]
	if !r.ref {
		r.value = b
		return r, nil
	}
	n, w := binary.Uvarint(b)
	if w <= 0 || n > uint64(len(b)-w) || uint64(len(b)-w)-n != uint64(len(hash{})) {
		return keyRec{}, fmt.Errorf("%w: key record reference", ErrBadRecord)
	}
	b = b[w:]
	r.pre = b[:n]
	copy(r.h[:], b[n:])
	return r, nil
}

// appendKeyRec appends r's encoding to dst.
func appendKeyRec(dst []byte, r keyRec) []byte {
	tag := r.level & tagLevels
	if !r.ref {
		return append(append(dst, tag), r.value...)
	}
	dst = append(dst, tag|tagRef)
	dst = binary.AppendUvarint(dst, uint64(len(r.pre)))
	dst = append(dst, r.pre...)
	return append(dst, r.h[:]...)
}

// meta is a shared value's reference counts. perm counts the keys
// without expiry; buckets count the keys with one, by expiry bucket
// (ascending, each count positive). vexp is the expiry the value and
// meta records carry (0: none): 0 while perm > 0, else at least every
// bucket still counted.
type meta struct {
	size    int64 // bytes of the shared data
	perm    int64
	vexp    int64
	buckets []bucketCount
}

type bucketCount struct{ g, n int64 }

// live returns the references still counted at now: buckets that ended
// (g <= now) hold only keys that expired.
func (m *meta) live(now int64) int64 {
	n := m.perm
	for _, b := range m.buckets {
		if b.g > now {
			n += b.n
		}
	}
	return n
}

// maxBucket is the latest bucket counted (0 if none).
func (m *meta) maxBucket() int64 {
	if len(m.buckets) == 0 {
		return 0
	}
	return m.buckets[len(m.buckets)-1].g
}

// prune drops the buckets that ended.
func (m *meta) prune(now int64) {
	i := 0
	for _, b := range m.buckets {
		if b.g > now && b.n > 0 {
			m.buckets[i] = b
			i++
		}
	}
	m.buckets = m.buckets[:i]
}

// add counts a reference in bucket g (0: perm) by d (+1 or -1).
func (m *meta) add(g, d int64) {
	if g == 0 {
		m.perm += d
		return
	}
	i := 0
	for i < len(m.buckets) && m.buckets[i].g < g {
		i++
	}
	if i < len(m.buckets) && m.buckets[i].g == g {
		m.buckets[i].n += d
		if m.buckets[i].n <= 0 {
			m.buckets = append(m.buckets[:i], m.buckets[i+1:]...)
		}
		return
	}
	if d > 0 {
		m.buckets = append(m.buckets, bucketCount{})
		copy(m.buckets[i+1:], m.buckets[i:])
		m.buckets[i] = bucketCount{g, d}
	}
}

// Buckets and vexp are multiples of 2^minLevel ms: stored in those units,
// buckets as deltas from the previous one.
func (m *meta) encode() []byte {
	b := make([]byte, 0, 16+6*len(m.buckets))
	b = binary.AppendUvarint(b, uint64(m.size))
	b = binary.AppendUvarint(b, uint64(m.perm))
	b = binary.AppendUvarint(b, uint64(m.vexp>>minLevel))
	b = binary.AppendUvarint(b, uint64(len(m.buckets)))
	prev := int64(0)
	for _, c := range m.buckets {
		b = binary.AppendUvarint(b, uint64((c.g-prev)>>minLevel))
		b = binary.AppendUvarint(b, uint64(c.n))
		prev = c.g
	}
	return b
}

func decodeMeta(b []byte) (meta, error) {
	var m meta
	r := reader{b: b}
	m.size = r.count()
	m.perm = r.count()
	m.vexp = r.units()
	n := r.count()
	if r.err == nil && n > int64(len(r.b)) { // each bucket takes 2 bytes at least
		r.err = errShort
	}
	prev := int64(0)
	for i := int64(0); i < n && r.err == nil; i++ {
		d := r.units()
		c := bucketCount{g: prev + d, n: r.count()}
		if r.err == nil && (d <= 0 || c.n <= 0 || c.g > maxExpiry+1<<maxLevel) {
			r.err = errShort
		}
		m.buckets = append(m.buckets, c)
		prev = c.g
	}
	if r.err != nil || len(r.b) != 0 {
		return meta{}, fmt.Errorf("%w: meta record", ErrBadRecord)
	}
	return m, nil
}

// totals are the store's figures for one expiry bucket (a bucket record);
// the no-expiry bucket also keeps the set of levels ever used (bit k:
// level k), which tells Stats which buckets to read. Counts are signed
// varints, so a wrong count shows up in Check instead of wrapping.
type totals struct {
	keys, refs, logical, values, stored int64
	levels                              uint64
}

func (t *totals) addTo(o totals) {
	t.keys += o.keys
	t.refs += o.refs
	t.logical += o.logical
	t.values += o.values
	t.stored += o.stored
	t.levels |= o.levels
}

func (t totals) zero() bool { return t == totals{} }

func (t totals) encode() []byte {
	b := make([]byte, 0, 24)
	for _, v := range []int64{t.keys, t.refs, t.logical, t.values, t.stored} {
		b = binary.AppendVarint(b, v)
	}
	return binary.AppendUvarint(b, t.levels)
}

func decodeTotals(b []byte) (totals, error) {
	var t totals
	r := reader{b: b}
	for _, p := range []*int64{&t.keys, &t.refs, &t.logical, &t.values, &t.stored} {
		*p = r.signed()
	}
	t.levels = r.uvarint()
	if r.err != nil || len(r.b) != 0 {
		return totals{}, fmt.Errorf("%w: bucket record", ErrBadRecord)
	}
	return t, nil
}

// reader decodes varints, keeping the first error.
type reader struct {
	b   []byte
	err error
}

var errShort = fmt.Errorf("%w: truncated", ErrBadRecord)

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

// count reads a non-negative count.
func (r *reader) count() int64 {
	v := r.uvarint()
	if v > math.MaxInt64>>1 {
		r.err = errShort
		return 0
	}
	return int64(v)
}

// units reads a time in units of 2^minLevel ms.
func (r *reader) units() int64 {
	v := r.uvarint()
	if v > (maxExpiry>>minLevel)+1<<(maxLevel-minLevel) {
		r.err = errShort
		return 0
	}
	return int64(v) << minLevel
}

func (r *reader) signed() int64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Varint(r.b)
	if n <= 0 {
		r.err = errShort
		return 0
	}
	r.b = r.b[n:]
	return v
}

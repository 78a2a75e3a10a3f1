package segment

// Problem is one damaged stretch of a segment found by Check.
type Problem struct {
	Offset int64  // where the damage starts
	Resume int64  // where the next valid record starts (len(data) if none)
	Reason string // why the record at Offset did not decode
}

// Check decodes every record of a segment (data is the whole file,
// header included) and calls fn for each valid one. Unlike Scan it does not
// stop at damage: it reports a Problem and resumes at the next aligned
// offset where a record decodes, so one damaged record does not hide the
// rest. It returns the problems found, in order.
func Check(data []byte, gen uint64, lim Limits, fn func(off int64, r *Record, size int)) []Problem {
	var probs []Problem
	off := int64(HeaderSize)
	for off < int64(len(data)) {
		r, size, err := Decode(data[off:], gen, off, lim)
		if err == nil {
			if fn != nil {
				fn(off, &r, size)
			}
			off += int64(size)
			continue
		}
		p := Problem{Offset: off, Resume: int64(len(data)), Reason: err.(*CorruptError).Reason}
		for next := (off + Align) &^ (Align - 1); next+fixedHeader < int64(len(data)); next += Align {
			if _, _, err := Decode(data[next:], gen, next, lim); err == nil {
				p.Resume = next
				break
			}
		}
		probs = append(probs, p)
		off = p.Resume
	}
	return probs
}

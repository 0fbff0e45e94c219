package sampler

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"hash/crc32"
	"math"
)

// Token is where an epoch stands: the same on every rank.
type Token struct {
	Job
	Segments []Segment
}

// tokenVersion is the first byte of every encoded token. Version 1 was the
// planner that permuted and windowed whole shards; version 2 permutes
// units (chunks) and counts Window in units.
const (
	tokenVersion    = 2
	oldTokenVersion = 1
)

// maxTokenSegments bounds the segments a parsed token may hold, so that a
// hostile token cannot make ParseToken or New allocate without bound. A
// job that resizes its world more than this many times in one epoch is not
// a job we plan for.
const maxTokenSegments = 1024

// maxTokenLen bounds an encoded token's length for the same reason.
const maxTokenLen = 64 << 10

// String encodes the token compactly: URL-safe base64 without padding of
//
//	version byte (2)
//	uvarint fingerprint header: len<<1 | 1 for lowercase hex (the bytes it
//	        spells follow), len<<1 | 0 for any other string (its bytes follow)
//	uvarint seed, uvarint epoch, uvarint window, byte policy
//	uvarint segment count, then per segment uvarint world size, batch size, steps
//	CRC-32 (IEEE) of everything before it, 4 bytes big-endian
//
// A token with an 8-byte fingerprint, a 64-bit seed and three segments
// is about 42 bytes, 56 characters.
func (t Token) String() string {
	b := make([]byte, 0, 48+len(t.Fingerprint)+len(t.Segments)*12)
	b = append(b, tokenVersion)
	if fp, err := hex.DecodeString(t.Fingerprint); err == nil && hex.EncodeToString(fp) == t.Fingerprint {
		b = binary.AppendUvarint(b, uint64(len(fp))<<1|1)
		b = append(b, fp...)
	} else {
		b = binary.AppendUvarint(b, uint64(len(t.Fingerprint))<<1)
		b = append(b, t.Fingerprint...)
	}
	b = binary.AppendUvarint(b, t.Seed)
	b = binary.AppendUvarint(b, t.Epoch)
	b = binary.AppendUvarint(b, uint64(t.Window))
	b = append(b, byte(t.Policy))
	b = binary.AppendUvarint(b, uint64(len(t.Segments)))
	for _, s := range t.Segments {
		b = binary.AppendUvarint(b, uint64(s.WorldSize))
		b = binary.AppendUvarint(b, uint64(s.BatchSize))
		b = binary.AppendUvarint(b, uint64(s.Steps))
	}
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	return base64.RawURLEncoding.EncodeToString(b)
}

// ParseToken decodes a token made by Token.String. A version-1 token (with
// a valid checksum) returns ErrOldToken. Anything else — wrong alphabet,
// wrong checksum, truncated, trailing bytes, out-of-range fields — is an
// error wrapping ErrBadToken; it never panics. A parsed token is only
// well-formed: Check (which New calls) says whether it belongs to a job.
func ParseToken(s string) (Token, error) {
	if len(s) > maxTokenLen {
		return Token{}, fmt.Errorf("%w: %d characters, at most %d", ErrBadToken, len(s), maxTokenLen)
	}
	b, err := base64.RawURLEncoding.DecodeString(s)
	if err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrBadToken, err)
	}
	if len(b) < 1+4 {
		return Token{}, fmt.Errorf("%w: %d bytes, too short", ErrBadToken, len(b))
	}
	body, sum := b[:len(b)-4], binary.BigEndian.Uint32(b[len(b)-4:])
	if got := crc32.ChecksumIEEE(body); got != sum {
		return Token{}, fmt.Errorf("%w: checksum %08x, want %08x", ErrBadToken, got, sum)
	}
	if body[0] == oldTokenVersion {
		return Token{}, ErrOldToken
	}
	if body[0] != tokenVersion {
		return Token{}, fmt.Errorf("%w: version %d, want %d", ErrBadToken, body[0], tokenVersion)
	}
	d := decoder{b: body[1:]}
	var t Token
	fpHead := d.uvarint("fingerprint length")
	fp := d.bytes("fingerprint", fpHead>>1)
	if fpHead&1 == 1 {
		t.Fingerprint = hex.EncodeToString(fp)
	} else {
		t.Fingerprint = string(fp)
	}
	t.Seed = d.uvarint("seed")
	t.Epoch = d.uvarint("epoch")
	t.Window = d.int("window", math.MaxInt32)
	t.Policy = Policy(d.byte("policy"))
	n := d.int("segment count", maxTokenSegments)
	if d.err == nil && n > 0 {
		t.Segments = make([]Segment, n)
		for i := range t.Segments {
			t.Segments[i] = Segment{
				WorldSize: d.int("world size", math.MaxInt32),
				BatchSize: d.int("batch size", math.MaxInt32),
				Steps:     int64(d.int("steps", math.MaxInt64)),
			}
		}
	}
	if d.err == nil && len(d.b) > 0 {
		d.err = fmt.Errorf("%d trailing bytes", len(d.b))
	}
	if d.err != nil {
		return Token{}, fmt.Errorf("%w: %v", ErrBadToken, d.err)
	}
	return t, nil
}

// decoder reads fields from a token body, keeping the first error.
type decoder struct {
	b   []byte
	err error
}

func (d *decoder) uvarint(what string) uint64 {
	if d.err != nil {
		return 0
	}
	v, n := binary.Uvarint(d.b)
	if n <= 0 {
		d.err = fmt.Errorf("%s: bad varint", what)
		return 0
	}
	d.b = d.b[n:]
	return v
}

func (d *decoder) int(what string, max uint64) int {
	v := d.uvarint(what)
	if d.err == nil && (v > max || v > math.MaxInt) {
		d.err = fmt.Errorf("%s %d out of range", what, v)
		return 0
	}
	return int(v)
}

func (d *decoder) byte(what string) byte {
	if d.err != nil {
		return 0
	}
	if len(d.b) == 0 {
		d.err = fmt.Errorf("%s: truncated", what)
		return 0
	}
	v := d.b[0]
	d.b = d.b[1:]
	return v
}

func (d *decoder) bytes(what string, n uint64) []byte {
	if d.err != nil {
		return nil
	}
	if n > uint64(len(d.b)) {
		d.err = fmt.Errorf("%s: %d bytes, only %d left", what, n, len(d.b))
		return nil
	}
	v := d.b[:n]
	d.b = d.b[n:]
	return v
}

// MismatchError is the error of Token.Check for a token field that differs
// from the job. It wraps ErrTokenMismatch.
type MismatchError struct {
	// Field is the Job field that differs: "fingerprint", "seed",
	// "epoch", "window" or "policy".
	Field string
	// Got is the token's value, Want the job's.
	Got, Want any
}

func (e *MismatchError) Error() string {
	if _, ok := e.Got.(string); ok {
		return fmt.Sprintf("%v: %s is %q in the token, %q in the job", ErrTokenMismatch, e.Field, e.Got, e.Want)
	}
	return fmt.Sprintf("%v: %s is %v in the token, %v in the job", ErrTokenMismatch, e.Field, e.Got, e.Want)
}

func (e *MismatchError) Unwrap() error { return ErrTokenMismatch }

// Check reports whether the token can resume job: the first field of the
// job that differs, as a *MismatchError; or segments a token may not hold
// (more than 1024, world or batch sizes out of range, negative steps), as
// an error wrapping ErrTokenMismatch. Whether the segments' steps fit the
// dataset only New can tell. New calls Check.
func (t Token) Check(job Job) error {
	var e *MismatchError
	switch {
	case t.Fingerprint != job.Fingerprint:
		e = &MismatchError{"fingerprint", t.Fingerprint, job.Fingerprint}
	case t.Seed != job.Seed:
		e = &MismatchError{"seed", t.Seed, job.Seed}
	case t.Epoch != job.Epoch:
		e = &MismatchError{"epoch", t.Epoch, job.Epoch}
	case t.Window != job.Window:
		e = &MismatchError{"window", t.Window, job.Window}
	case t.Policy != job.Policy:
		e = &MismatchError{"policy", t.Policy, job.Policy}
	}
	if e != nil {
		return e
	}
	if len(t.Segments) > maxTokenSegments {
		return fmt.Errorf("%w: %d segments, at most %d", ErrTokenMismatch, len(t.Segments), maxTokenSegments)
	}
	for i, s := range t.Segments {
		if err := checkSizes(s.WorldSize, s.BatchSize); err != nil {
			return fmt.Errorf("%w: segment %d: %v", ErrTokenMismatch, i, err)
		}
		if s.Steps < 0 {
			return fmt.Errorf("%w: segment %d: %d steps", ErrTokenMismatch, i, s.Steps)
		}
	}
	return nil
}

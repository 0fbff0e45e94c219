package sampler

import (
	"encoding/base64"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestTokenRoundTrip(t *testing.T) {
	tests := []Token{
		{},
		{Job: Job{Fingerprint: "0123456789abcdef", Seed: math.MaxUint64, Epoch: 12, Window: 4, Policy: DropLast},
			Segments: []Segment{{WorldSize: 8, BatchSize: 32, Steps: 1000}}},
		{Job: Job{Fingerprint: "not hex at all", Seed: 1, Epoch: 0, Window: 1, Policy: Pad},
			Segments: []Segment{{8, 32, 10}, {4, 32, 7}, {16, 64, 0}}},
		{Job: Job{Fingerprint: "ABCDEF", Window: 2, Policy: Pad}}, // upper-case hex stays a string
		{Job: Job{Fingerprint: "abc", Window: 2, Policy: Pad}},    // odd-length hex too
		{Job: Job{Window: 1, Policy: DropLast}, Segments: []Segment{{MaxWorldSize, MaxBatchSize, math.MaxInt64}}},
	}
	for _, tok := range tests {
		s := tok.String()
		got, err := ParseToken(s)
		if err != nil {
			t.Fatalf("ParseToken(%q) of %+v: %v", s, tok, err)
		}
		if diff := cmp.Diff(tok, got); diff != "" {
			t.Errorf("ParseToken(%q) differs from the token encoded (-want +got):\n%s", s, diff)
		}
		if strings.ContainsAny(s, "+/=") {
			t.Errorf("token %q is not URL-safe unpadded base64", s)
		}
	}
}

// TestTokenSmall checks the size promise: a few dozen bytes for a few
// segments with a real 8-byte fingerprint and a 64-bit seed.
func TestTokenSmall(t *testing.T) {
	tok := Token{
		Job:      Job{Fingerprint: "9f86d081884c7d65", Seed: 0xdeadbeefcafef00d, Epoch: 41, Window: 4, Policy: DropLast},
		Segments: []Segment{{64, 256, 12000}, {48, 256, 3000}, {64, 512, 17}},
	}
	s := tok.String()
	raw, _ := base64.RawURLEncoding.DecodeString(s)
	if len(raw) > 48 {
		t.Errorf("token with 3 segments is %d bytes (%d characters), want at most 48 bytes", len(raw), len(s))
	}
	t.Logf("3-segment token: %d bytes, %d characters: %s", len(raw), len(s), s)
}

func TestParseTokenErrors(t *testing.T) {
	good := Token{Job: Job{Fingerprint: "0123456789abcdef", Seed: 3, Window: 4, Policy: DropLast},
		Segments: []Segment{{2, 3, 4}}}.String()
	raw, _ := base64.RawURLEncoding.DecodeString(good)
	flip := append([]byte(nil), raw...)
	flip[3] ^= 1
	tests := []struct {
		name, in, substr string
	}{
		{"empty", "", "too short"},
		{"not base64", "!!!!", "illegal base64"},
		{"padded base64", good + "==", "illegal base64"},
		{"flipped bit", base64.RawURLEncoding.EncodeToString(flip), "checksum"},
		{"truncated", good[:len(good)-3], ""},
		{"too long", strings.Repeat("A", maxTokenLen+1), "characters"},
		{"trailing bytes", withCRC(append(body(raw), 0)), "trailing"},
		{"version", withCRC(append([]byte{9}, body(raw)[1:]...)), "version 9"},
		{"huge segment count", withCRC([]byte{2, 0, 0, 0, 1, 1, 0xff, 0xff, 0x03}), "segment count"},
		{"version 0", withCRC(append([]byte{0}, body(raw)[1:]...)), "version 0, want 2"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseToken(tt.in)
			if !errors.Is(err, ErrBadToken) || !strings.Contains(err.Error(), tt.substr) {
				t.Fatalf("ParseToken(%.40q) = %v, want an error wrapping ErrBadToken containing %q", tt.in, err, tt.substr)
			}
		})
	}
}

// TestParseOldToken checks that a well-formed version-1 token (from the
// planner that shuffled whole shards) returns ErrOldToken itself, not an
// ErrBadToken, while a corrupt one stays ErrBadToken.
func TestParseOldToken(t *testing.T) {
	const v1 = "ARGfhtCBiEx9ZY3g-9f83e_W3gEpBAECQIAC4F0wgAK4F2DV-yA" // docs/planner.md before chunks
	_, err := ParseToken(v1)
	if err != ErrOldToken || errors.Is(err, ErrBadToken) || errors.Is(err, ErrTokenMismatch) {
		t.Fatalf("ParseToken(v1 token) = %v, want ErrOldToken alone", err)
	}
	raw, _ := base64.RawURLEncoding.DecodeString(v1)
	raw[5] ^= 1
	if _, err := ParseToken(base64.RawURLEncoding.EncodeToString(raw)); !errors.Is(err, ErrBadToken) {
		t.Fatalf("ParseToken(corrupt v1 token) = %v, want ErrBadToken", err)
	}
	b, _ := base64.RawURLEncoding.DecodeString(Token{Job: Job{Window: 1, Policy: Pad}}.String())
	if b[0] != 2 {
		t.Fatalf("tokens are made with version %d, want 2", b[0])
	}
}

func TestTokenCheck(t *testing.T) {
	job := Job{Fingerprint: "0123456789abcdef", Seed: 1, Epoch: 2, Window: 8, Policy: DropLast}
	tests := []struct {
		name      string
		mod       func(*Token)
		field     string
		got, want any
		substr    string
	}{
		{"fingerprint", func(t *Token) { t.Fingerprint = "ff" }, "fingerprint", "ff", "0123456789abcdef", `fingerprint is "ff" in the token, "0123456789abcdef" in the job`},
		{"seed", func(t *Token) { t.Seed = 5 }, "seed", uint64(5), uint64(1), "seed is 5 in the token, 1 in the job"},
		{"epoch", func(t *Token) { t.Epoch = 3 }, "epoch", uint64(3), uint64(2), "epoch is 3 in the token, 2 in the job"},
		{"window", func(t *Token) { t.Window = 4 }, "window", 4, 8, "window is 4 in the token, 8 in the job"},
		{"policy", func(t *Token) { t.Policy = Pad }, "policy", Pad, DropLast, "policy is pad in the token, drop-last in the job"},
		{"first field wins", func(t *Token) { t.Seed, t.Policy = 5, Pad }, "seed", uint64(5), uint64(1), "seed"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tok := Token{Job: job, Segments: []Segment{{2, 3, 4}}}
			tt.mod(&tok)
			err := tok.Check(job)
			var me *MismatchError
			if !errors.As(err, &me) || !errors.Is(err, ErrTokenMismatch) {
				t.Fatalf("Check = %v, want a *MismatchError wrapping ErrTokenMismatch", err)
			}
			if me.Field != tt.field || me.Got != tt.got || me.Want != tt.want || !strings.Contains(err.Error(), tt.substr) {
				t.Fatalf("Check = %#v (%v), want field %q got %v want %v, containing %q", me, err, tt.field, tt.got, tt.want, tt.substr)
			}
		})
	}
	if err := (Token{Job: job, Segments: []Segment{{2, 3, 4}}}).Check(job); err != nil {
		t.Fatalf("Check of a matching token = %v", err)
	}
	var me *MismatchError
	err := Token{Job: job, Segments: []Segment{{0, 3, 4}}}.Check(job)
	if !errors.Is(err, ErrTokenMismatch) || errors.As(err, &me) {
		t.Fatalf("Check of a bad segment = %v, want ErrTokenMismatch without a field", err)
	}
}

func body(raw []byte) []byte { return append([]byte(nil), raw[:len(raw)-4]...) }

// withCRC encodes a token body b with a valid checksum, to test the
// field checks behind it.
func withCRC(b []byte) string {
	b = binary.BigEndian.AppendUint32(b, crc32.ChecksumIEEE(b))
	return base64.RawURLEncoding.EncodeToString(b)
}

func FuzzParseToken(f *testing.F) {
	f.Add(Token{Job: Job{Fingerprint: "0123456789abcdef", Seed: 1, Window: 4, Policy: DropLast},
		Segments: []Segment{{8, 32, 10}, {4, 32, 0}}}.String())
	f.Add(Token{}.String())
	f.Add("")
	f.Add("AQ")
	f.Add("ARGfhtCBiEx9ZY3g-9f83e_W3gEpBAECQIAC4F0wgAK4F2DV-yA") // version 1
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrBadToken) && err != ErrOldToken {
				t.Fatalf("ParseToken(%q) = %v, neither wrapping ErrBadToken nor ErrOldToken", s, err)
			}
			return
		}
		again, err := ParseToken(tok.String())
		if err != nil {
			t.Fatalf("ParseToken(String(ParseToken(%q))): %v", s, err)
		}
		if !cmp.Equal(tok, again) {
			t.Fatalf("token %q does not round-trip: %+v then %+v", s, tok, again)
		}
		// Whatever parses must be safe to hand to New.
		if _, err := New([]Unit{{0, 0, 2}, {0, 2, 1}, {2, 0, 5}}, tok.Job, &tok, 2, 2); err != nil &&
			!errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTokenMismatch) {
			t.Fatalf("New with parsed token %+v: %v", tok, err)
		}
	})
}

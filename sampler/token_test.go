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
		{"huge segment count", withCRC([]byte{1, 0, 0, 0, 1, 1, 0xff, 0xff, 0x03}), "segment count"},
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
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := ParseToken(s)
		if err != nil {
			if !errors.Is(err, ErrBadToken) {
				t.Fatalf("ParseToken(%q) = %v, not wrapping ErrBadToken", s, err)
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
		if _, err := New([]int64{3, 0, 5}, tok.Job, &tok, 2, 2); err != nil &&
			!errors.Is(err, ErrInvalid) && !errors.Is(err, ErrTokenMismatch) {
			t.Fatalf("New with parsed token %+v: %v", tok, err)
		}
	})
}

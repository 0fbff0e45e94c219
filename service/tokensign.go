package service

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"os"
	"strings"

	"github.com/shardstream/shardstream/sampler"
)

// Signed resume tokens. With Config.TokenKeys set, every token the server
// emits is the sampler's token followed by a signature:
//
//	TOKEN "." "s1" "." base64url(HMAC-SHA256(key, "shardstream resume token s1\x00" TOKEN))
//
// and every token a request carries must be signed by one of the keys, or
// it is refused with InvalidArgument before any planning. The sampler
// stays pure: it encodes and parses tokens, the service signs them. "." is
// outside the sampler's base64url alphabet, so the split is unambiguous;
// "s1" versions the scheme. Several keys allow rotation: sign with the new
// one first in the file, verify with both until old tokens are gone.

const (
	tokenSigVersion = "s1"
	tokenSigContext = "shardstream resume token s1\x00"
	minTokenKeyLen  = 32 // bytes: HMAC-SHA256's block-size sweet spot, 256 bits
)

// ReadTokenKeys reads a token key file: one key per line (blank lines and
// "#" comments skipped), each at least 32 bytes, written as text (say
// `openssl rand -hex 32`); the first signs, all verify.
func ReadTokenKeys(path string) ([][]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read token key file: %w", err)
	}
	var keys [][]byte
	for i, line := range bytes.Split(b, []byte("\n")) {
		line = bytes.TrimSpace(line)
		if len(line) == 0 || line[0] == '#' {
			continue
		}
		if len(line) < minTokenKeyLen {
			return nil, fmt.Errorf("token key file %s line %d: %d bytes, want at least %d (e.g. openssl rand -hex 32)", path, i+1, len(line), minTokenKeyLen)
		}
		keys = append(keys, line)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("token key file %s: no key in it", path)
	}
	return keys, nil
}

// tokenSigner signs and verifies resume tokens.
type tokenSigner struct{ keys [][]byte }

func (s tokenSigner) mac(key []byte, token string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(tokenSigContext))
	m.Write([]byte(token))
	return m.Sum(nil)
}

// sign appends the signature of the first key.
func (s tokenSigner) sign(token string) string {
	return token + "." + tokenSigVersion + "." + base64.RawURLEncoding.EncodeToString(s.mac(s.keys[0], token))
}

// verify returns the token inside a signed one, or an error wrapping
// sampler.ErrBadToken when it is unsigned, of another scheme, or not
// signed by any key.
func (s tokenSigner) verify(signed string) (string, error) {
	token, rest, ok := strings.Cut(signed, ".")
	if !ok {
		return "", fmt.Errorf("%w: not signed, and this server accepts only tokens it signed (--token-key-file)", sampler.ErrBadToken)
	}
	version, sig, ok := strings.Cut(rest, ".")
	if !ok || version != tokenSigVersion {
		return "", fmt.Errorf("%w: unknown signature scheme, want %s", sampler.ErrBadToken, tokenSigVersion)
	}
	got, err := base64.RawURLEncoding.DecodeString(sig)
	if err != nil || len(got) != sha256.Size {
		return "", fmt.Errorf("%w: malformed signature", sampler.ErrBadToken)
	}
	for _, k := range s.keys {
		if hmac.Equal(got, s.mac(k, token)) {
			return token, nil
		}
	}
	return "", fmt.Errorf("%w: signature does not match this server's keys (--token-key-file): forged, altered, or signed with a retired key", sampler.ErrBadToken)
}

// signingPlanner wraps pl so that plans emit signed tokens and parsing
// checks the signature first.
func signingPlanner(pl planner, keys [][]byte) planner {
	s := tokenSigner{keys: keys}
	return planner{
		newPlan: func(units []sampler.Unit, job sampler.Job, resume *sampler.Token, worldSize, batchSize int) (epochPlan, error) {
			p, err := pl.newPlan(units, job, resume, worldSize, batchSize)
			if err != nil {
				return nil, err
			}
			return signedPlan{p, s}, nil
		},
		parseToken: func(t string) (sampler.Token, error) {
			inner, err := s.verify(t)
			if err != nil {
				return sampler.Token{}, err
			}
			return pl.parseToken(inner)
		},
	}
}

// signedPlan is an epochPlan whose tokens are signed.
type signedPlan struct {
	epochPlan
	s tokenSigner
}

func (p signedPlan) Token(step int64) string { return p.s.sign(p.epochPlan.Token(step)) }

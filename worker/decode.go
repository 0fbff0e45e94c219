package worker

// INTERIM until worker/wds lands: a minimal decoder so the tree builds.
// It is replaced by type aliases of wds.Field/wds.Sample and a call of
// wds.DecodeChunk.

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/shardstream/shardstream/manifest"
)

// Field is one named part of a sample ("jpg", "cls", …).
type Field struct {
	Name string
	Data []byte
}

// Sample is one decoded training example.
type Sample struct {
	Key    string
	Fields []Field
}

// newZstdDecoder returns the Reader's decoder: DecodeAll is safe for
// concurrent use, up to GOMAXPROCS at once.
func newZstdDecoder() (*zstd.Decoder, error) {
	return zstd.NewReader(nil, zstd.WithDecoderConcurrency(0), zstd.WithDecoderMaxMemory(4<<30))
}

func decodeChunk(dec *zstd.Decoder, raw []byte, compression string, firstSample, want, rawSize int64) ([]Sample, error) {
	if compression == manifest.CompressionZstd {
		var err error
		if raw, err = dec.DecodeAll(raw, make([]byte, 0, rawSize)); err != nil {
			return nil, err
		}
	}
	br := bytes.NewReader(raw)
	tr := tar.NewReader(br)
	var out []Sample
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		// Zero copy: after Next the reader sits at the entry's data; the
		// next Next seeks past it.
		pos := int64(len(raw)) - int64(br.Len())
		if h.Size < 0 || pos+h.Size > int64(len(raw)) {
			return nil, fmt.Errorf("tar entry %q of %d bytes runs past the chunk", h.Name, h.Size)
		}
		data := raw[pos : pos+h.Size : pos+h.Size]
		if h.Typeflag != tar.TypeReg {
			continue
		}
		// WebDataset: the key is the path up to the first dot of the base
		// name; the rest names the field.
		dir, base := "", h.Name
		if i := strings.LastIndexByte(h.Name, '/'); i >= 0 {
			dir, base = h.Name[:i+1], h.Name[i+1:]
		}
		stem, ext, _ := strings.Cut(base, ".")
		key := dir + stem
		if len(out) == 0 || out[len(out)-1].Key != key {
			out = append(out, Sample{Key: key})
		}
		out[len(out)-1].Fields = append(out[len(out)-1].Fields, Field{ext, data})
	}
	if int64(len(out)) != want {
		return nil, fmt.Errorf("got %d samples, want %d", len(out), want)
	}
	return out, nil
}

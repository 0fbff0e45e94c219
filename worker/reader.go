// Package worker is the loader's read path: storage backends (S3, local
// directories), parallel ranged GETs, zstd decompression, tar parsing and
// caching. ("worker" here is not a PyTorch DataLoader worker: it is the
// loader server's reading side.)
//
// PLACEHOLDER API: the signatures below are the contract the service codes
// against; the bodies are being written.
package worker

import (
	"context"
	"log/slog"

	"github.com/shardstream/shardstream/manifest"
)

// Config configures a Reader. Zero values mean defaults.
type Config struct {
	S3Endpoint  string // e.g. http://127.0.0.1:9000 for MinIO; empty: AWS
	S3PathStyle bool   // path-style addressing (MinIO, most S3-compatible stores)
	S3Region    string
	// more fields: part size, concurrency, retries, cache …
}

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

// Chunk is one decoded chunk of a shard: the samples that start in it.
type Chunk struct {
	FirstSample int64
	Samples     []Sample
}

// Reader reads decoded chunks of one dataset. Safe for concurrent use.
type Reader struct{}

// Open opens the dataset at uri (a local directory or s3://bucket/prefix)
// and reads its manifest. Missing paths, buckets and unparsable manifests
// are errors naming the uri.
func Open(ctx context.Context, uri string, cfg Config, log *slog.Logger) (*Reader, error) {
	panic("TODO")
}

// Manifest is the dataset's manifest.
func (r *Reader) Manifest() *manifest.Manifest { panic("TODO") }

// Chunk returns chunk c of shard s, decoded; errors name shard and offset.
func (r *Reader) Chunk(ctx context.Context, s, c int) (*Chunk, error) { panic("TODO") }

// Close releases the reader's connections and cache.
func (r *Reader) Close() error { return nil }

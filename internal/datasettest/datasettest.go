// Package datasettest holds the helpers that tests of the read path and
// the servers share: writing a small dataset into a store, reading a
// metric's value from a registry, and draining a stream.
//
// wds's own tests cannot use it (it imports wds); they write shards with
// their own helpers, next to the code they test.
package datasettest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store"
	"github.com/shardstream/shardstream/wds"
)

// Options shape the dataset Write writes. The zero value writes plain tar
// shards of wds.DefaultChunkSize chunks at the store's root.
type Options struct {
	// Compression is manifest.CompressionNone ("" too) or
	// manifest.CompressionZstd.
	Compression string
	// ChunkSize is the raw size after which a chunk ends at the next
	// sample boundary; 0 means wds.DefaultChunkSize.
	ChunkSize int64
	// Prefix goes before each shard's name (wds.ShardName), e.g. "wds/".
	Prefix string
}

// Write writes shards shards of perShard samples each, sample(s, i)
// being sample i of shard s, with wds.ShardWriter (the way pack writes
// them), then their manifest; it returns the manifest. Shards carry the
// ETag the store reports.
func Write(t testing.TB, st store.Store, shards, perShard int, sample func(s, i int) wds.Sample, opts Options) *manifest.Manifest {
	t.Helper()
	ctx := context.Background()
	comp := opts.Compression
	if comp == "" {
		comp = manifest.CompressionNone
	}
	m := &manifest.Manifest{Version: manifest.Version}
	for s := range shards {
		var obj bytes.Buffer
		sw := wds.NewShardWriter(&obj, comp, opts.ChunkSize)
		for i := range perShard {
			if err := sw.WriteSample(sample(s, i)); err != nil {
				t.Fatalf("datasettest: shard %d sample %d: %v", s, i, err)
			}
		}
		sh, err := sw.Close()
		if err != nil {
			t.Fatalf("datasettest: shard %d: %v", s, err)
		}
		sh.Path = opts.Prefix + wds.ShardName(s, comp)
		if err := st.Write(ctx, sh.Path, bytes.NewReader(obj.Bytes())); err != nil {
			t.Fatalf("datasettest: %v", err)
		}
		info, err := st.Stat(ctx, sh.Path)
		if err != nil {
			t.Fatalf("datasettest: %v", err)
		}
		sh.ETag = info.ETag
		m.Shards = append(m.Shards, sh)
	}
	if err := m.Validate(); err != nil {
		t.Fatalf("datasettest: %v", err)
	}
	data, err := m.Marshal()
	if err != nil {
		t.Fatalf("datasettest: %v", err)
	}
	if err := st.Write(ctx, manifest.FileName, bytes.NewReader(data)); err != nil {
		t.Fatalf("datasettest: %v", err)
	}
	return m
}

// MetricValue is the value of the counter or gauge name in g (of a
// histogram, the sum of its observations), of its
// first series whose label values begin with labels (in the order of the
// label names, which Gather sorts; none: its first series). It is 0 when
// there is no such series: a labelled counter that never counted has
// none.
func MetricValue(t testing.TB, g prometheus.Gatherer, name string, labels ...string) float64 {
	t.Helper()
	mfs, err := g.Gather()
	if err != nil {
		t.Fatalf("datasettest: gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	series:
		for _, m := range mf.GetMetric() {
			ls := m.GetLabel()
			if len(labels) > len(ls) {
				continue
			}
			for i, v := range labels {
				if ls[i].GetValue() != v {
					continue series
				}
			}
			return m.GetCounter().GetValue() + m.GetGauge().GetValue() + m.GetHistogram().GetSampleSum()
		}
	}
	return 0
}

// Drain receives from s until it ends or limit messages have come
// (limit < 0: no limit). It returns the messages and the error that
// ended the stream, nil for a clean end (io.EOF) or the limit.
func Drain[T any](s interface{ Recv() (T, error) }, limit int) ([]T, error) {
	var out []T
	for limit < 0 || len(out) < limit {
		m, err := s.Recv()
		if errors.Is(err, io.EOF) {
			return out, nil
		}
		if err != nil {
			return out, fmt.Errorf("after %d messages: %w", len(out), err)
		}
		out = append(out, m)
	}
	return out, nil
}

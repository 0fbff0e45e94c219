package datasettest_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shardstream/shardstream/internal/datasettest"
	"github.com/shardstream/shardstream/manifest"
	"github.com/shardstream/shardstream/store/memstore"
	"github.com/shardstream/shardstream/wds"
)

func sample(s, i int) wds.Sample {
	return wds.Sample{Key: fmt.Sprintf("s%d-%04d", s, i), Fields: []wds.Field{{Name: "cls", Data: []byte(fmt.Sprint(s*100 + i))}}}
}

// TestWrite: what Write stores decodes back to the samples, by the
// manifest it returns and the one it stores.
func TestWrite(t *testing.T) {
	ctx := context.Background()
	for _, comp := range []string{manifest.CompressionNone, manifest.CompressionZstd} {
		st := memstore.New()
		m := datasettest.Write(t, st, 2, 50, sample, datasettest.Options{Compression: comp, ChunkSize: 512, Prefix: "d/"})
		rc, err := st.ReadRange(ctx, manifest.FileName, 0, -1)
		if err != nil {
			t.Fatal(err)
		}
		data, _ := io.ReadAll(rc)
		rc.Close()
		stored, err := manifest.Parse(data)
		if err != nil {
			t.Fatal(err)
		}
		if len(stored.Shards) != 2 || len(m.Shards) != 2 {
			t.Fatalf("%s: %d shards stored, %d returned, want 2", comp, len(stored.Shards), len(m.Shards))
		}
		var d wds.Decoder
		for s, sh := range stored.Shards {
			if sh.Path != "d/"+wds.ShardName(s, comp) || sh.ETag == "" || len(sh.Chunks) < 2 {
				t.Errorf("%s: shard %d: path %q, ETag %q, %d chunks", comp, s, sh.Path, sh.ETag, len(sh.Chunks))
			}
			for _, c := range sh.Chunks {
				rc, err := st.ReadRange(ctx, sh.Path, c.Offset, c.Size)
				if err != nil {
					t.Fatal(err)
				}
				raw, _ := io.ReadAll(rc)
				rc.Close()
				got, err := d.Decode(nil, raw, sh.Compression, c)
				if err != nil {
					t.Fatalf("%s: shard %d chunk at %d: %v", comp, s, c.Offset, err)
				}
				for k, smp := range got {
					if want := sample(s, int(c.FirstSample)+k); smp.Key != want.Key || string(smp.Fields[0].Data) != string(want.Fields[0].Data) {
						t.Fatalf("%s: shard %d sample %d = %q, want %q", comp, s, int(c.FirstSample)+k, smp.Key, want.Key)
					}
				}
			}
		}
	}
}

func TestMetricValue(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "c_total"}, []string{"a", "b"})
	g := prometheus.NewGauge(prometheus.GaugeOpts{Name: "g"})
	reg.MustRegister(c, g)
	c.WithLabelValues("x", "1").Add(2)
	c.WithLabelValues("y", "2").Add(5)
	g.Set(7)
	for _, tc := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"c_total", []string{"x", "1"}, 2},
		{"c_total", []string{"y"}, 5},
		{"c_total", []string{"y", "1"}, 0},
		{"c_total", []string{"x", "1", "extra"}, 0},
		{"g", nil, 7},
		{"missing", nil, 0},
	} {
		if got := datasettest.MetricValue(t, reg, tc.name, tc.labels...); got != tc.want {
			t.Errorf("MetricValue(%s, %q) = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

// stream yields its messages, then err.
type stream struct {
	msgs []int
	err  error
}

func (s *stream) Recv() (int, error) {
	if len(s.msgs) == 0 {
		return 0, s.err
	}
	m := s.msgs[0]
	s.msgs = s.msgs[1:]
	return m, nil
}

func TestDrain(t *testing.T) {
	boom := errors.New("boom")
	for _, tc := range []struct {
		s       *stream
		limit   int
		want    int
		wantErr error
	}{
		{&stream{msgs: []int{1, 2, 3}, err: io.EOF}, -1, 3, nil},
		{&stream{msgs: []int{1, 2, 3}, err: io.EOF}, 2, 2, nil},
		{&stream{msgs: []int{1}, err: boom}, -1, 1, boom},
	} {
		got, err := datasettest.Drain(tc.s, tc.limit)
		if len(got) != tc.want || !errors.Is(err, tc.wantErr) || (tc.wantErr == nil) != (err == nil) {
			t.Errorf("Drain(limit %d) = %v, %v; want %d messages, %v", tc.limit, got, err, tc.want, tc.wantErr)
		}
	}
}

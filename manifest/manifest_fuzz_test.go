package manifest

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var writeSeeds = flag.Bool("write-fuzz-seeds", false, "rewrite the committed fuzz seed corpus under testdata/fuzz")

func fuzzSeeds() []string {
	return []string{
		`{"version":1,"shards":[{"path":"shard-000000.tar.zst","size":300,"samples":5,"compression":"zstd","chunks":[{"offset":0,"size":100,"raw_size":4096,"first_sample":0,"samples":2},{"offset":100,"size":150,"raw_size":5120,"first_sample":2,"samples":3}]}]}`,
		`{"version":1,"shards":[{"path":"a.tar","size":2048,"etag":"\"abc\"","samples":1,"compression":"none","chunks":[{"offset":0,"size":2048,"raw_size":2048,"first_sample":0,"samples":1}]},{"path":"b.tar","size":0,"samples":0,"compression":"none","chunks":[]}]}`,
		`{"version":1,"shards":[]}`,
		`{"version":2,"shards":[]}`,
		`{"version":1,"shards":[{"path":"x","size":10,"samples":3,"compression":"none","chunks":[{"offset":0,"size":5,"raw_size":5,"first_sample":0,"samples":0},{"offset":5,"size":5,"raw_size":5,"first_sample":0,"samples":3}]}]}`,
		`{"version":1,"shards":[{"path":"x","size":-1}]}`,
		`not json`,
	}
}

// FuzzManifestParse: any bytes parse to a valid manifest or an error,
// never a panic; a parsed manifest survives Marshal and Parse unchanged
// (fingerprint included), and ChunkOf finds the chunk holding a sample.
func FuzzManifestParse(f *testing.F) {
	for _, s := range fuzzSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		m, err := Parse(data)
		if err != nil {
			return
		}
		out, err := m.Marshal()
		if err != nil {
			t.Fatalf("Marshal of a parsed manifest: %v", err)
		}
		again, err := Parse(out)
		if err != nil {
			t.Fatalf("Parse(Marshal(m)): %v\n%s", err, out)
		}
		if diff := cmp.Diff(m, again); diff != "" {
			t.Fatalf("manifest changed through Marshal and Parse:\n%s", diff)
		}
		if m.Fingerprint() != again.Fingerprint() {
			t.Fatal("fingerprint changed through Marshal and Parse")
		}
		for _, sh := range m.Shards {
			for _, i := range []int64{0, sh.Samples / 2, sh.Samples - 1} {
				if i < 0 || i >= sh.Samples {
					continue
				}
				k := sh.ChunkOf(i)
				if k >= len(sh.Chunks) {
					t.Fatalf("shard %q: ChunkOf(%d) = %d of %d chunks", sh.Path, i, k, len(sh.Chunks))
				}
				if c := sh.Chunks[k]; i < c.FirstSample || i >= c.FirstSample+c.Samples {
					t.Fatalf("shard %q: ChunkOf(%d) = chunk %d %+v, which does not hold it", sh.Path, i, k, c)
				}
			}
		}
	})
}

// TestWriteFuzzSeeds rewrites testdata/fuzz/FuzzManifestParse with
// -write-fuzz-seeds.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("run with -write-fuzz-seeds to rewrite the seed corpus")
	}
	dir := filepath.Join("testdata", "fuzz", "FuzzManifestParse")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for i, s := range fuzzSeeds() {
		body := fmt.Sprintf("go test fuzz v1\n[]byte(%s)\n", strconv.Quote(s))
		if err := os.WriteFile(filepath.Join(dir, fmt.Sprintf("seed-%02d", i)), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

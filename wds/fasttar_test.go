package wds

import (
	"archive/tar"
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shardstream/shardstream/manifest"
)

// parseArchiveOnly is ParseTar without the fast path: archive/tar reads
// every header. The reference FuzzParseTarFast compares against.
func parseArchiveOnly(buf []byte, firstSample, want int64) ([]Sample, error) {
	g := newGrouper(firstSample, want)
	if err := g.archive(buf, 0); err != nil {
		return nil, err
	}
	return g.finish(int64(len(buf)))
}

// sameParse reports how two ParseTar results differ: in error text, in
// samples, or in which bytes their field data are ("" if they do not).
func sameParse(a []Sample, aerr error, b []Sample, berr error) string {
	if fmt.Sprint(aerr) != fmt.Sprint(berr) {
		return fmt.Sprintf("errors differ: %v / %v", aerr, berr)
	}
	if len(a) != len(b) {
		return fmt.Sprintf("%d / %d samples", len(a), len(b))
	}
	// Field data alias buf: the same bytes are the same first byte.
	same := func(x, y []byte) bool { return len(x) == len(y) && (len(x) == 0 || &x[0] == &y[0]) }
	for i := range a {
		if a[i].Key != b[i].Key || len(a[i].Fields) != len(b[i].Fields) {
			return fmt.Sprintf("sample %d: %q with %d fields / %q with %d", i, a[i].Key, len(a[i].Fields), b[i].Key, len(b[i].Fields))
		}
		for j := range a[i].Fields {
			fa, fb := a[i].Fields[j], b[i].Fields[j]
			if fa.Name != fb.Name || !same(fa.Data, fb.Data) {
				return fmt.Sprintf("sample %d field %d: %q of %d bytes / %q of %d bytes, or not the same bytes", i, j, fa.Name, len(fa.Data), fb.Name, len(fb.Data))
			}
		}
	}
	return ""
}

// TestParseTarFastPath: the headers pack, Go's USTAR/GNU/PAX writers and
// GNU tar write for ordinary samples all take the fast path to the last
// entry, with the samples archive/tar reads.
func TestParseTarFastPath(t *testing.T) {
	samples := testSamples(40, 3)
	packed, sh := writeShard(t, samples, manifest.CompressionNone, 1<<30)
	inputs := map[string][]byte{"pack": packed[:sh.Chunks[0].Size]}
	var names []tar.Header
	for _, s := range samples[:10] {
		for _, f := range s.Fields {
			names = append(names, tar.Header{Name: EntryName(s.Key, f.Name)})
		}
	}
	names = append(names, tar.Header{Name: strings.Repeat("d/", 60) + "long-but-splits.jpg"}) // USTAR prefix
	for _, format := range []tar.Format{tar.FormatUSTAR, tar.FormatGNU, tar.FormatPAX} {
		entries := names
		if format == tar.FormatGNU {
			entries = names[:len(names)-1] // GNU has no prefix field: a long name is an 'L' entry
		}
		inputs[format.String()] = tarOf(t, format, entries...)
	}
	if gnuTar, err := exec.LookPath("tar"); err == nil {
		dir := t.TempDir()
		for _, n := range []string{"a/b.jpg", "a/b.cls", "a/c.json"} {
			os.MkdirAll(filepath.Join(dir, filepath.Dir(n)), 0o755)
			os.WriteFile(filepath.Join(dir, n), []byte("contents of "+n), 0o644)
		}
		out, err := exec.Command(gnuTar, "--format=gnu", "-C", dir, "-cf", "-", "a/b.jpg", "a/b.cls", "a/c.json").Output()
		if err != nil {
			t.Fatalf("%s: %v", gnuTar, err)
		}
		inputs["gnu tar"] = out
	}
	for name, buf := range inputs {
		t.Run(name, func(t *testing.T) {
			g := newGrouper(0, -1)
			pos, err := g.plain(buf)
			if err != nil {
				t.Fatal(err)
			}
			end := int64(len(buf)) // the end-of-archive zero blocks go to archive/tar
			for end >= blockSize && bytes.Equal(buf[end-blockSize:end], make([]byte, blockSize)) {
				end -= blockSize
			}
			if pos != end {
				t.Fatalf("fast path stopped at %d of %d", pos, end)
			}
			want, werr := parseArchiveOnly(buf, 0, -1)
			got, gerr := ParseTar(buf, 0, -1)
			if werr != nil || len(got) == 0 {
				t.Fatalf("archive/tar: %d samples, %v", len(want), werr)
			}
			if d := sameParse(want, werr, got, gerr); d != "" {
				t.Fatal(d)
			}
		})
	}
}

// TestParseTarFallback: headers the fast path does not read (a GNU long
// name, a directory, a PAX record, base-256 size) hand over to
// archive/tar at that header, and the result is archive/tar's.
func TestParseTarFallback(t *testing.T) {
	long := strings.Repeat("x", 120)
	for _, tc := range []struct {
		name   string
		format tar.Format
		h      tar.Header
	}{
		{"gnu long name", tar.FormatGNU, tar.Header{Name: long + ".jpg"}},
		{"directory", tar.FormatUSTAR, tar.Header{Name: "dir/", Typeflag: tar.TypeDir}},
		{"pax record", tar.FormatPAX, tar.Header{Name: "k.txt", PAXRecords: map[string]string{"comment": "c"}}},
		{"gnu base-256 uid", tar.FormatGNU, tar.Header{Name: "k.txt", Uid: 1 << 30}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			first := tarOf(t, tc.format, tar.Header{Name: "a.jpg"}, tar.Header{Name: "a.cls"})
			first = first[:len(first)-2*blockSize] // no end-of-archive blocks
			buf := append(first, tarOf(t, tc.format, tc.h, tar.Header{Name: "z.cls"})...)
			g := newGrouper(0, -1)
			pos, err := g.plain(buf)
			if err != nil || pos != int64(len(first)) {
				t.Fatalf("fast path stopped at %d (%v), want %d, the %s header", pos, err, len(first), tc.name)
			}
			want, werr := parseArchiveOnly(buf, 0, -1)
			got, gerr := ParseTar(buf, 0, -1)
			if werr != nil {
				t.Fatal(werr)
			}
			if d := sameParse(want, werr, got, gerr); d != "" {
				t.Fatal(d)
			}
		})
	}
}

// FuzzParseTarFast: for any bytes, ParseTar (fast path, then archive/tar)
// and archive/tar alone give the same samples, at the same offsets, or
// the same error.
func FuzzParseTarFast(f *testing.F) {
	for _, s := range fastSeeds(f) {
		f.Add(s, uint8(255))
	}
	f.Fuzz(func(t *testing.T, data []byte, want uint8) {
		w := int64(want)
		if want == 255 {
			w = -1
		}
		a, aerr := parseArchiveOnly(data, 7, w)
		b, berr := ParseTar(data, 7, w)
		if d := sameParse(a, aerr, b, berr); d != "" {
			t.Fatal(d)
		}
	})
}

// fastSeeds are small tars in every header dialect the fast path reads or
// hands over, plain-tar decode seeds among them.
func fastSeeds(t testing.TB) [][]byte {
	var out [][]byte
	for _, s := range decodeSeeds(t) {
		if !s.zstd {
			out = append(out, s.data)
		}
	}
	for _, format := range []tar.Format{tar.FormatUSTAR, tar.FormatGNU, tar.FormatPAX} {
		out = append(out, tarOf(t, format, tar.Header{Name: "a/k.jpg"}, tar.Header{Name: "a/k.cls"}, tar.Header{Name: "b.x"}))
	}
	out = append(out, tarOf(t, tar.FormatUSTAR, tar.Header{Name: strings.Repeat("p/", 60) + "k.x"}))
	out = append(out, tarOf(t, tar.FormatGNU, tar.Header{Name: "k.x", AccessTime: time.Unix(1, 0)}))
	return out
}

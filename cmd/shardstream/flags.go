package main

import (
	"flag"
	"fmt"
	"strconv"
	"strings"

	"github.com/shardstream/shardstream/store/s3store"
)

// s3Flags are the S3 client flags every command that opens a dataset
// shares. Credentials come from the standard AWS chain, never from flags.
type s3Flags struct {
	endpoint  string
	pathStyle bool
	region    string
}

func (f *s3Flags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.endpoint, "s3-endpoint", "", "S3 endpoint URL for S3-compatible stores, e.g. http://127.0.0.1:9000 (empty: AWS)")
	fs.BoolVar(&f.pathStyle, "s3-path-style", false, "path-style S3 addressing (MinIO and most S3-compatible stores)")
	fs.StringVar(&f.region, "s3-region", "", "S3 region (empty: from the AWS config, else us-east-1)")
}

func (f *s3Flags) config() s3store.Config {
	return s3store.Config{Endpoint: f.endpoint, PathStyle: f.pathStyle, Region: f.region}
}

// sizeUnits are the suffixes parseSize reads, longest first where one is a
// suffix of another ("MiB" before "B").
var sizeUnits = []struct {
	suffix string
	mult   int64
}{
	{"KiB", 1 << 10}, {"MiB", 1 << 20}, {"GiB", 1 << 30}, {"TiB", 1 << 40},
	{"KB", 1e3}, {"MB", 1e6}, {"GB", 1e9}, {"TB", 1e12}, {"B", 1},
	{"k", 1 << 10}, {"m", 1 << 20}, {"g", 1 << 30}, {"t", 1 << 40},
	{"K", 1 << 10}, {"M", 1 << 20}, {"G", 1 << 30}, {"T", 1 << 40},
}

// parseSize reads a byte size for every size flag: a count (1048576), a
// binary (512KiB, 20GiB) or decimal (512MB) unit, or a one-letter binary
// suffix in either case (512k, 8M).
func parseSize(s string) (int64, error) {
	num, mult := strings.TrimSpace(s), int64(1)
	for _, u := range sizeUnits {
		if strings.HasSuffix(num, u.suffix) {
			num, mult = strings.TrimSpace(strings.TrimSuffix(num, u.suffix)), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(num, 10, 64)
	if err != nil || n < 0 || (n > 0 && mult > (1<<62)/n) {
		return 0, fmt.Errorf("size %q: want a byte count like 1048576, 512k, 512MiB or 20GiB", s)
	}
	return n * mult, nil
}

package wds

import (
	"io"

	"github.com/klauspost/compress/zstd"
)

// newZstdDecoder is the one way wds makes a zstd decoder, for DecodeAll
// (r nil) or for streaming r. (Tests also use plain zstd.NewReader on
// purpose: an ordinary decoder as a reference.)
func newZstdDecoder(r io.Reader, concurrency int, maxRawSize int64) (*zstd.Decoder, error) {
	return zstd.NewReader(r,
		// Decoder passes 0: up to GOMAXPROCS chunks decode at once for
		// the read path's many callers. The index, one goroutine reading
		// one shard, passes 1: a stream then decodes in the caller's
		// goroutine and starts none.
		zstd.WithDecoderConcurrency(concurrency),
		// A frame header or window that claims more than a chunk may hold
		// fails at once instead of allocating it (the library's default
		// is 64 GiB): the bound against zstd bombs.
		zstd.WithDecoderMaxMemory(uint64(maxRawSize)),
		// DecodeAll never grows dst past its capacity: callers size dst
		// from the manifest's RawSize or a seek table entry, so a frame
		// that decodes to more fails with ErrDecoderSizeExceeded
		// instead of allocating what it claims. (No effect on streams.)
		zstd.WithDecodeAllCapLimit(true),
	)
}

package wds

import (
	"encoding/binary"
	"fmt"
	"math"
)

// The zstd seekable format
// (https://github.com/facebook/zstd/blob/dev/contrib/seekable_format/zstd_seekable_compression_format.md):
// after the data frames, a skippable frame holds one entry per frame
// (compressed size, decompressed size, optional checksum) and a footer
// (frame count, descriptor, magic).
const (
	seekTableMagic    = 0x184D2A5E // skippable frame magic of the seek table
	seekableMagic     = 0x8F92EAB1 // footer magic
	seekFooterSize    = 9          // frame count u32, descriptor u8, magic u32
	skippableHeader   = 8          // magic u32, frame size u32
	seekChecksumFlag  = 0x80
	seekReservedFlags = 0x7C
)

// SeekEntry is one frame of a seekable zstd stream.
type SeekEntry struct {
	CompressedSize   uint32
	DecompressedSize uint32
}

// AppendSeekTable appends the seek table frame for entries (no
// checksums) to b.
func AppendSeekTable(b []byte, entries []SeekEntry) []byte {
	size := len(entries)*8 + seekFooterSize
	b = binary.LittleEndian.AppendUint32(b, seekTableMagic)
	b = binary.LittleEndian.AppendUint32(b, uint32(size))
	for _, e := range entries {
		b = binary.LittleEndian.AppendUint32(b, e.CompressedSize)
		b = binary.LittleEndian.AppendUint32(b, e.DecompressedSize)
	}
	b = binary.LittleEndian.AppendUint32(b, uint32(len(entries)))
	b = append(b, 0) // descriptor: no checksums
	return binary.LittleEndian.AppendUint32(b, seekableMagic)
}

// SeekTableSize returns the size of the seek table frame that ends tail
// (the last bytes of an object), read from its footer, and whether tail
// ends with a seek table footer at all. The size may exceed len(tail):
// read that many bytes from the end and call ParseSeekTable.
func SeekTableSize(tail []byte) (int64, bool) {
	if len(tail) < seekFooterSize {
		return 0, false
	}
	f := tail[len(tail)-seekFooterSize:]
	if binary.LittleEndian.Uint32(f[5:]) != seekableMagic {
		return 0, false
	}
	n := int64(binary.LittleEndian.Uint32(f[0:]))
	es := int64(8)
	if f[4]&seekChecksumFlag != 0 {
		es = 12
	}
	return skippableHeader + n*es + seekFooterSize, true
}

// ParseSeekTable parses the seek table frame that makes up the whole of
// table (SeekTableSize bytes from an object's end). Checksums, when
// present, are skipped.
func ParseSeekTable(table []byte) ([]SeekEntry, error) {
	size, ok := SeekTableSize(table)
	if !ok {
		return nil, &FormatError{Offset: int64(len(table)), Msg: "no zstd seek table footer"}
	}
	if size != int64(len(table)) {
		return nil, &FormatError{Offset: 0, Msg: fmt.Sprintf("seek table of %d bytes, footer says %d", len(table), size)}
	}
	if m := binary.LittleEndian.Uint32(table); m != seekTableMagic {
		return nil, &FormatError{Offset: 0, Msg: fmt.Sprintf("seek table frame magic %#x, want %#x", m, seekTableMagic)}
	}
	if fs := int64(binary.LittleEndian.Uint32(table[4:])); fs != size-skippableHeader {
		return nil, &FormatError{Offset: 4, Msg: fmt.Sprintf("seek table frame size %d, footer implies %d", fs, size-skippableHeader)}
	}
	desc := table[len(table)-5]
	if desc&seekReservedFlags != 0 {
		return nil, &FormatError{Offset: int64(len(table) - 5), Msg: fmt.Sprintf("seek table descriptor %#x has reserved bits set", desc)}
	}
	es := 8
	if desc&seekChecksumFlag != 0 {
		es = 12
	}
	body := table[skippableHeader : len(table)-seekFooterSize]
	entries := make([]SeekEntry, 0, len(body)/es)
	for i := 0; i+es <= len(body); i += es {
		entries = append(entries, SeekEntry{
			CompressedSize:   binary.LittleEndian.Uint32(body[i:]),
			DecompressedSize: binary.LittleEndian.Uint32(body[i+4:]),
		})
	}
	return entries, nil
}

// fitsSeekEntry reports whether a frame's sizes fit the seek table's
// 32-bit fields.
func fitsSeekEntry(compressed, raw int64) bool {
	return compressed <= math.MaxUint32 && raw <= math.MaxUint32
}

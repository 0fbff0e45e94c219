package wds

import (
	"path/filepath"
	"strings"
)

// The fast path of ParseTar. Shards written by pack, Python's tarfile,
// GNU tar and most WebDataset tools are runs of plain regular-file
// headers; archive/tar reads each through an io.Reader, parses every
// field into a tar.Header and allocates it, which costs as much CPU as the
// GETs of an uncompressed chunk of ~100 KiB samples. plainHeader reads only
// what ParseTar needs, and only from headers archive/tar would read to the
// same name and size without error; anything else goes to archive/tar.

const blockSize = 512

// plain adds the entries of buf from its start while their headers are
// plain and their data and padding lie within buf. It returns the offset
// of the first header it left for archive/tar (len(buf) when none).
func (g *grouper) plain(buf []byte) (int64, error) {
	pos := int64(0)
	for int64(len(buf))-pos >= blockSize {
		name, size, ok := plainHeader(buf[pos : pos+blockSize])
		if !ok {
			break
		}
		data := pos + blockSize
		end := data + padded(size) // size < 2^36: twelve octal digits
		if end > int64(len(buf)) {
			break // archive/tar names the truncation
		}
		if err := g.add(name, buf[data:data+size:data+size], data); err != nil {
			return 0, err
		}
		pos = end
	}
	return pos, nil
}

// plainHeader returns the name and size of a regular file's header block
// when archive/tar would read it as exactly that and nothing more: a valid
// checksum; USTAR magic (not star's trailer) or GNU magic with no access
// or change time; type '0' or NUL; a local name not ending in '/'; every
// numeric field archive/tar parses in plain octal.
func plainHeader(b []byte) (name string, size int64, ok bool) {
	sum, ok := octal(b[148:156])
	if !ok {
		return "", 0, false
	}
	unsigned, signed := int64(0), int64(0)
	for i, c := range b {
		if 148 <= i && i < 156 {
			c = ' ' // the checksum field counts as spaces
		}
		unsigned += int64(c)
		signed += int64(int8(c))
	}
	if sum != unsigned && sum != signed {
		return "", 0, false
	}
	if t := b[156]; t != '0' && t != 0 {
		return "", 0, false
	}
	var prefix string
	switch magic := string(b[257:263]); {
	case magic == "ustar\x00" && string(b[508:512]) != "tar\x00":
		prefix = cString(b[345:500])
	case magic == "ustar " && string(b[263:265]) == " \x00" && b[345] == 0 && b[357] == 0:
		// GNU without atime or ctime: archive/tar parses neither.
	default:
		return "", 0, false // V7, star, or GNU with times: archive/tar
	}
	// Every field archive/tar parses as a number (mode, uid, gid, size,
	// mtime, devmajor, devminor) must parse, or it fails the header.
	for _, f := range [...][2]int{{100, 108}, {108, 116}, {116, 124}, {136, 148}, {329, 337}, {337, 345}} {
		if _, ok := numeric(b[f[0]:f[1]]); !ok {
			return "", 0, false
		}
	}
	if size, ok = numeric(b[124:136]); !ok {
		return "", 0, false
	}
	name = cString(b[:100])
	if prefix != "" {
		name = prefix + "/" + name
	}
	// A trailing slash makes a NUL-typed entry a directory; a non-local
	// name fails Next under GODEBUG tarinsecurepath=0.
	if strings.HasSuffix(name, "/") || !filepath.IsLocal(name) {
		return "", 0, false
	}
	return name, size, true
}

// numeric is archive/tar's parseNumeric for plain octal; base-256 fields
// (high bit set) are reported not ok, left for archive/tar.
func numeric(b []byte) (int64, bool) {
	if b[0]&0x80 != 0 {
		return 0, false
	}
	return octal(b)
}

// octal is archive/tar's parseOctal: spaces and NULs trimmed at both ends,
// the rest up to a NUL in octal digits (empty is 0).
func octal(b []byte) (int64, bool) {
	for len(b) > 0 && (b[0] == ' ' || b[0] == 0) {
		b = b[1:]
	}
	for len(b) > 0 && (b[len(b)-1] == ' ' || b[len(b)-1] == 0) {
		b = b[:len(b)-1]
	}
	var x int64
	for _, c := range b {
		if c == 0 {
			break
		}
		if c < '0' || c > '7' {
			return 0, false
		}
		x = x<<3 | int64(c-'0')
	}
	return x, true
}

// cString is the bytes of b up to its first NUL.
func cString(b []byte) string {
	for i, c := range b {
		if c == 0 {
			return string(b[:i])
		}
	}
	return string(b)
}

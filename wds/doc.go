// Package wds reads and writes shardstream's shard format: WebDataset tar
// shards, plain or compressed as seekable zstd, and the chunk tables of
// their manifests.
//
// A shard is a tar archive whose entries are grouped into samples the
// WebDataset way: the key of an entry is its directory plus its base name
// up to the first dot, the rest of the base name names the field
// ("a/b/x.seg.png" is field "seg.png" of sample "a/b/x"), and consecutive
// entries with the same key form one sample. Directories and other
// non-regular entries are skipped.
//
// A compressed shard is a series of independent zstd frames, each holding
// whole samples, followed by a seek table in the zstd seekable format (a
// skippable frame), so that ordinary zstd tools decode the whole shard and
// seekable-aware tools can find the frames. A chunk of the manifest is one
// frame (or, for indexed third-party shards, a run of frames); for a plain
// tar shard it is a run of whole tar entries holding whole samples.
//
// The writer side is ShardWriter (one shard) and WriteDataset (a dataset of
// shards and its manifest); IndexShard builds the chunk table of a shard
// written by other tools. Decoder.Decode turns one chunk's stored bytes
// into samples, bounded by the manifest's raw size; ParseTar groups the
// entries of decompressed tar bytes into samples.
//
// # Errors
//
// Bytes that are not a valid chunk (truncated or corrupt tar, corrupt
// zstd, a sample count unlike the manifest's) give a *FormatError with the
// offset in the chunk's decompressed bytes; decoding never panics and
// never reads past its input. docs/format.md describes the format.
package wds

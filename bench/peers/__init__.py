"""The peer benchmark (issue 14): shardstream side by side with the S3
connector for PyTorch, MosaicML Streaming, LitData and WebDataset.
See bench/peers/README.md and docs/benchmarks.md."""

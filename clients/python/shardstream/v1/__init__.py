"""Generated gRPC code for shardstream.v1 (``make proto``); do not edit."""

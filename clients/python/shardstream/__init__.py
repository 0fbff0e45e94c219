"""shardstream: a torch IterableDataset fed by the shardstream loader service."""

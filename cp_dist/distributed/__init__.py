"""Process groups, TorchRec sharding, and sharded state (initialisation and checkpoints)."""

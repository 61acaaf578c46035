"""CTR models: TorchRec field embeddings -> a backbone's feature interactions -> q -> logit."""

"""Corpus reading, chunking, latent layouts, the Megatron bin/idx writer and the datasets."""

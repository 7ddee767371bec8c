"""Reasoning to Learn from Latent Thoughts for NeMo / Megatron."""

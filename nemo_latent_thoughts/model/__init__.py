"""Llama-style model presets and their megatron-core and Hugging Face forms."""

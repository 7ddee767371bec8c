"""Warm-start latents from a teacher: a program (synthetic data) or, later, an LLM server."""

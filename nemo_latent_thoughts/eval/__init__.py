"""Few-shot chain-of-thought evaluation (plain and latent mode), grading, held-out ELBO, reports."""

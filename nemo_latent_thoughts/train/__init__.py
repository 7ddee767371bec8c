"""M-step training: the embedded CPU trainer (and, with the nemo extra, NeMo recipes)."""

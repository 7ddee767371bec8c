"""E-step sampling: backends that sample and score token ids, and importance weights."""

"""Corpora prepared for training: read, cleaned, deduplicated, tokenized and packed into blocks."""

"""One module per CLI command; shared option helpers live in ``common``."""

"""The integer widths a quantized weight may take: what specs, plans, methods and searches accept."""

BITS = (2, 3, 4, 5, 6, 8, 16)

"""The integer widths a quantized weight may take: what specs, plans, methods and searches accept."""

BITS = (1, 2, 3, 4, 5, 6, 8, 16)
# a uniform grid needs two levels besides zero (one bit has only a sign): rtn's and gptq's widths
GRID_BITS = tuple(bits for bits in BITS if bits >= 2)

"""SAM's fast paths: twins of `alignsam.sam.modeling` modules that give the same numbers with less work."""

"""SAM's figure, one file per box: the image encoder, the prompt encoder, the mask decoder with its two-way
transformer, their common parts, the assembled model and its configuration."""

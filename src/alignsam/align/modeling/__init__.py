"""ALIGN's figure, one file per box: the EfficientNet image encoder, the BERT text encoder, the contrastive
loss between them, the assembled dual encoder and its configuration."""

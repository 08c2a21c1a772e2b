"""The image index: embeddings, metadata and a nearest-neighbour index in one folder (docs/index.md).

`alignsam.index.ray` embeds on a Ray cluster (optional extra `alignsam[ray]`; docs/ray.md).
"""

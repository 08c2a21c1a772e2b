"""The official package's `segment_anything.utils` import paths, as thin aliases.

Code written for the official package runs with its package name replaced:

    from alignsam.sam.utils.transforms import ResizeLongestSide   # segment_anything.utils.transforms
    from alignsam.sam.utils.amg import batched_mask_to_box         # segment_anything.utils.amg

These modules only re-export this library's own implementations (`alignsam.sam.transforms`,
`alignsam.sam.amg`); nothing is copied. `segment_anything.utils.onnx` has no alias here.
"""

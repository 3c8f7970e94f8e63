"""The built-in base families, and which of them each built-in op's code handles.

An op registered with ``families=`` is refused by ``validate`` on a base of any other family
(``ops[0] swap_pool: does not apply to base mvit_base_16x4 (family mvit); it needs a base of
family ...``), before anything is built. The README's table of bases × ops is these tuples.
"""

SLOWFAST = "slowfast"
X3D = "x3d"
EFFICIENT_X3D = "efficient_x3d"  # pytorchvideo's mobile-CPU X3D: s1..s5 and its own head, not a Net
RESNET = "resnet"  # slow_r50, i3d_r50, c2d_r50
CSN = "csn"
R2PLUS1D = "r2plus1d"
MVIT = "mvit"

#: pytorchvideo ``Net`` models: a chain of ``blocks``, the classifier last (what truncate cuts).
NET_FAMILIES = (SLOWFAST, X3D, RESNET, CSN, R2PLUS1D)
#: Every built-in family.
ALL_FAMILIES = (*NET_FAMILIES, EFFICIENT_X3D, MVIT)

#: The families each architecture-specific op supports (fuse_bn, freeze and lr_mult take any model).
REPLACE_HEAD = ALL_FAMILIES
TRUNCATE = NET_FAMILIES  # MViT's blocks pass (tokens, thw); efficient X3D has no block chain
SWAP_POOL = NET_FAMILIES  # MViT pools nothing (attention over a fixed token grid); efficient X3D pools adaptively
STEM = ALL_FAMILIES  # grayscale_stem, adapt_stem: ResNetBasicStem conv, X3D's first stem conv, MViT's patch conv

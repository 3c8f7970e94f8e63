"""pytorchvideo, imported on first use with its import-time FutureWarning silenced.

pytorchvideo 0.1.5 calls the deprecated ``torch.jit.script`` while importing. Modules that
only register plugins import this lazily, so ``sfsurgery ops`` and ``--help`` never load torch.
"""

import warnings

with warnings.catch_warnings():
    warnings.simplefilter("ignore", FutureWarning)
    from pytorchvideo.models import hub
    from pytorchvideo.models.head import ResNetBasicHead
    from pytorchvideo.models.slowfast import PoolConcatPathway, create_slowfast
    from pytorchvideo.models.stem import ResNetBasicStem
    from pytorchvideo.models.weight_init import init_net_weights

__all__ = ["PoolConcatPathway", "ResNetBasicHead", "ResNetBasicStem", "create_slowfast", "hub", "init_net_weights"]

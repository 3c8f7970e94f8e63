"""The output file: one self-describing ``.safetensors`` file.

:mod:`.writer` writes it deterministically and atomically, :mod:`.metadata` says what its
``__metadata__`` holds, :mod:`.reader` reads it back, :mod:`.dtypes` maps tensor dtypes.
"""

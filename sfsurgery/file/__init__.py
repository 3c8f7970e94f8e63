"""The output file: one self-describing ``.safetensors`` file.

:mod:`.writer` writes it deterministically and atomically, :mod:`.metadata` says what its
``__metadata__`` holds, :mod:`.header` types and seals the header, :mod:`.reader` is the one
reader (bounded, typed, verified), :mod:`.rebuild` turns a read header into a model,
:mod:`.dtypes` maps tensor dtypes.
"""

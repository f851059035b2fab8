"""A small character-level Transformer language model whose attention is the project's FlashAttention.

``model.py`` is the model (with KV-cached generation), ``data.py`` the corpus and batches,
``train.py`` the training command, ``sample.py`` the generation command; beside them
``checkpoint.py`` (the checkpoint and loss files of a run), ``devices.py`` (device, backend and
autocast choice) and ``distributed.py`` (data-parallel training).
"""

from .model import GPT, Config, KVCache

__all__ = ["GPT", "Config", "KVCache"]

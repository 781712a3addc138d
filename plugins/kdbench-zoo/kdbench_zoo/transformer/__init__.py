"""The zoo's transformer-based methods (one module each): they read a transformer layer's self-attention
(probabilities, scores, values) and hidden states through kdbench's attention extension of the layered
interface (``model(x, layers=[...], internals=(...))``), and refuse, at validation, a task whose models
have none (an MLP)."""

from kdbench_zoo.transformer.at import AttentionTransfer
from kdbench_zoo.transformer.minilm import MiniLM
from kdbench_zoo.transformer.pkd import PKD
from kdbench_zoo.transformer.tinybert import TinyBERT

METHODS: list = [MiniLM, PKD, TinyBERT, AttentionTransfer]

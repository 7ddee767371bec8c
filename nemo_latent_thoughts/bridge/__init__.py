"""The Megatron-Bridge path (NeMo Framework containers 26.04 and later; Python 3.12).

`provider` (the dataset provider), `recipes` (zero-argument `ConfigContainer` recipes and a
round's `recipe.yaml` as one), `pretrain` (the entry point, `python -m
nemo_latent_thoughts.bridge.pretrain` and `nlt mstep-bridge`) and `checkpoint` (HF base models in,
Bridge checkpoints out to the HF directory the E-step reads). Importing `megatron.bridge` needs
Transformer Engine, which the containers ship.
"""

"""The NeMo 2 adapter: data module, recipes (NeMo-Run factories), round YAML -> recipe, export.

Every module here imports NeMo / NeMo-Run at its top, so import them only where the `nemo` extra
is installed; `import nemo_latent_thoughts` itself never imports this package.
"""

"""The NeMo 2 adapter: data module, recipes (NeMo-Run factories), round YAML -> recipe, export.

`data`, `recipes` and `mstep` import NeMo / NeMo-Run at their top: import them only where the
`nemo` extra is installed (`export` needs megatron-core only). `import nemo_latent_thoughts`
never imports this package.
"""

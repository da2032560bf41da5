"""OmegaConf resolvers for composing params.yaml. DVC loads Hydra plugins from the repository root before it
composes (`dvc exp run`), which imports this module: conf/config.yaml's `model.code: ${arch_code:${model.arch}}`
then resolves to the code that builds the chosen network (selfsup.config.arch_code), so dvc.yaml's training
stages depend on nets/ only where the network comes from there."""

from omegaconf import OmegaConf

from selfsup.config import arch_code

OmegaConf.register_new_resolver("arch_code", arch_code, replace=True)

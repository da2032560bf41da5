"""Your own networks: `model.arch: nets.<file>:<function>`. The training stages depend on this folder, so
editing a network here re-runs them. See README, 'Backbones'."""

"""What every stage that trains or evaluates a network runs (pretrain, finetune, linear_probe): the backbones,
devices and processes, images on the device, batch augmentation and the one training engine. One dependency of
those stages in dvc.yaml (the package: each of them imports all of it)."""

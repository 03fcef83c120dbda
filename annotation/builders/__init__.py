"""Dataset builders: multi-image augmentation (MIA-DPO) and verifiable arithmetic word problems."""

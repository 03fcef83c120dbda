"""Pure loss functions, one module per family (``preference``: the DPO family)."""

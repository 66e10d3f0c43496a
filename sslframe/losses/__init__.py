"""Pure loss functions with explicit global-batch semantics (an optional process group); import
them from their modules (``sslframe.losses.ntxent``, ``.swav``, ``.dino``...)."""

"""Training: Composer glue (model wrapper, optimizer, schedulers, callbacks, Trainer builder).

Kept light on purpose: import the submodules you need (``flexbert.train.optim``,
``flexbert.train.schedulers``, ``flexbert.train.flops``, ``flexbert.train.callbacks``);
importing this package does not import Composer.
"""

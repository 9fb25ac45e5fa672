"""Training: the loop (:mod:`.loop`), resume state (:mod:`.resume`), optimizer, schedule and loss
factories (:mod:`.optim`), device choice (:mod:`.device`), curve tracking (:mod:`.tracking`) and
multi-process training under torchrun (:mod:`.distributed`)."""

"""Models: the from-scratch CNN (:mod:`.scratch`), its closed-form size and FLOP figures
(:mod:`.size`) and the activation factory shared by both (:mod:`.activations`)."""

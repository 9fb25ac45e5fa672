"""What every stage and command shares: typed configs (:mod:`.config`), the user-error type
(:mod:`.errors`), atomic file writes (:mod:`.files`) and the stage runner (:mod:`.stage_runner`)."""

"""Post-processing of readings: text normalisation, field validation, dictionary correction
(:mod:`.processor` composes them; :mod:`.correct` applies them to one region)."""

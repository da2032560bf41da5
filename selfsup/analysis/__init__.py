"""The comparison's statistics, endpoints and figures: the compare stage's own code (and the report's)."""

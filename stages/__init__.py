"""The study's stage scripts (one per DVC stage) and the small modules they share."""

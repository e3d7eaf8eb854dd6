"""Small shared helpers: atomic file output, hashing, seeding, logging setup."""

"""Local state: the SQLite database, the library of shared contents, hashing, .part files."""

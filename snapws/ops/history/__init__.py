"""History: log, refs (branches and tags), revision parsing, fast-forward
checks."""

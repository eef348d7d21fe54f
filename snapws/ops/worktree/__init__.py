"""The working-tree verbs: init, commit, checkout and reset, restore, status
and diff, eject, mount, shell."""

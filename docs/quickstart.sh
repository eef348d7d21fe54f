#!/bin/sh
# snapws quickstart: a demo directory with history, branches and rollback.
# Run as root (overlay mounts). DEMO selects where (default /tmp/snapws-demo).
set -eu
DEMO=${DEMO:-/tmp/snapws-demo}
if [ -e "$DEMO" ]; then  # a demo of an earlier run: its store forgets it, then it goes
    snapws -C "$DEMO/project" eject 2>/dev/null || umount -l "$DEMO/project" 2>/dev/null || true
    rm -rf "$DEMO"
fi
mkdir -p "$DEMO/project/src"
echo 'print("hello")' > "$DEMO/project/src/app.py"
echo 'demo project' > "$DEMO/project/README"

set -x
snapws init "$DEMO/project"                 # content becomes the base layer (says where the store is)
cd "$DEMO/project"
echo 'print("hello, world")' > src/app.py
echo 'data' > data.csv
rm README
snapws status                                # A/M/D since HEAD
snapws diff -p                               # unified diff of text files
snapws commit -m "second version"            # the changes become a new layer
snapws log --oneline
snapws checkout -b experiment                # a branch is a name, not a copy
echo 'oops' > src/app.py                     # this shell keeps working where it is
snapws commit -m "experiment"
snapws reset --hard HEAD~1                   # rollback in milliseconds
cat src/app.py
snapws log --graph --all --oneline
snapws diff HEAD~1 HEAD --stat               # any two snapshots
snapws workspaces                            # held: this shell sits in it
set +x
cd /
snapws -C "$DEMO/project" umount             # changes stay in the store
echo "quickstart done: the store is your own, outside $DEMO (see \`snapws init\` above)"

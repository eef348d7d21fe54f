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
snapws commit -m "second version"            # upperdir -> new layer, remount
cd .                                         # see the remounted tree
snapws log --oneline
snapws checkout -b experiment                # a branch is a name, not a copy
cd .
echo 'oops' > src/app.py
snapws commit -m "experiment"
cd .
snapws reset --hard HEAD~1                   # rollback in milliseconds
cd .
cat src/app.py
snapws log --graph --all --oneline
snapws diff HEAD~1 HEAD --stat               # any two snapshots
snapws workspaces
set +x
cd /
snapws -C "$DEMO/project" umount             # changes stay in the store
echo "quickstart done: the store is your own, outside $DEMO (see \`snapws init\` above)"

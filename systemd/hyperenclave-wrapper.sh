#!/bin/sh
# Installed as /usr/bin/hyperenclave: runs the CLI from ../lib/hyperenclave relative to itself,
# so an installation under DESTDIR works from where it lies.
here=$(dirname "$(readlink -f "$0")")
exec node "$here/../lib/hyperenclave/dist/src/cli/main.js" "$@"

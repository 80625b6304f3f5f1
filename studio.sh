#!/usr/bin/env bash
# Studio: the local web page for every step (model, data, train, export, talk); opens the browser.
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" studio.py "$@"

#!/usr/bin/env bash
# Step 6 again: redo only the GGUF conversion and checks from output/merged (no merge).
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" pipeline.py export --skip-merge "$@"

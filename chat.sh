#!/usr/bin/env bash
# Step 7: talk to output/finetuned_gemma.gguf in the terminal (--compare shows the base model too).
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" chat.py "$@"

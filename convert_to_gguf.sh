#!/usr/bin/env bash
# Step 6: merge if needed, convert to GGUF, quantize and check the result (output/finetuned_gemma.gguf).
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" pipeline.py export "$@"

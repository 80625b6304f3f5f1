#!/usr/bin/env bash
# Step 4.1: watch training progress in TensorBoard.
exec "$(dirname "${BASH_SOURCE[0]}")/scripts/launch.sh" check_tensorboard_runs.py "$@"

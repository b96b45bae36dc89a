#!/bin/sh
# Runs the golden suite (see golden/run.py); `make golden` calls this.
exec "${PYTHON:-python3}" "$(dirname "$0")/run.py" "$@"

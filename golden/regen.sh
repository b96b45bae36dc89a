#!/bin/sh
# Regenerates golden/cases/ from the real qemu-img (see golden/regen.py).
exec "${PYTHON:-python3}" "$(dirname "$0")/regen.py" "$@"

#!/bin/bash
# step.sh SCENARIO STEP CMD...: runs one scenario step straight from cloud-init's runcmd
# (user-data names the command itself) and reports it like run_step (lib.sh).
# shellcheck source-path=SCRIPTDIR source=lib.sh
. /mnt/vmtest/guest/lib.sh
scenario "$1"
name=$2
shift 2
run_step "$name" "$@"

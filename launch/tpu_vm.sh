#!/usr/bin/env bash
# rsh on a Cloud TPU VM slice (e.g. a v4-32: 4 hosts of 4 chips): the repository is
# copied to every worker, installed with jax[tpu], and rsh.main started on all workers
# at once; jax.distributed finds the slice's hosts itself (--multihost).
#
#   launch/tpu_vm.sh NAME ZONE -- --config=configs/uahm.py --workdir=/mnt/shared/runs/uahm
#   RSH_DRY_RUN=1 launch/tpu_vm.sh NAME ZONE -- --config=...   (print the commands, run nothing)
#
# The workdir must be a filesystem every host mounts at the same path (e.g. a Filestore
# NFS share): orbax writes each checkpoint from every host; host 0 writes everything
# else. The same command resumes a run that was stopped or preempted.
# RSH_SKIP_INSTALL=1 starts the run without copying and installing again.
set -euo pipefail

usage() {
  echo "usage: launch/tpu_vm.sh TPU_NAME ZONE -- --config=configs/<method>.py[:arg] --workdir=DIR [rsh.main flags]" >&2
  exit 2
}
[ "$#" -ge 3 ] || usage
NAME="$1"; ZONE="$2"; shift 2
[ "$1" = "--" ] || usage
shift
[ "$#" -ge 1 ] || usage
REPO="$(cd "$(dirname "$0")/.." && pwd)"
DEST="${RSH_REMOTE_DIR:-rsh}"
flags="$(printf '%q ' "$@")"
gcloud_tpu=(gcloud compute tpus tpu-vm)
commands=()
if [ -z "${RSH_SKIP_INSTALL:-}" ]; then
  # Only what git tracks (no runs, caches or virtual environments).
  archive="${TMPDIR:-/tmp}/rsh-$$.tar.gz"
  commands+=("git -C $(printf '%q' "$REPO") archive --format=tar.gz -o $(printf '%q' "$archive") HEAD")
  commands+=("$(printf '%q ' "${gcloud_tpu[@]}") scp $(printf '%q' "$archive") $(printf '%q' "$NAME"):rsh.tar.gz --worker=all --zone=$(printf '%q' "$ZONE")")
  commands+=("$(printf '%q ' "${gcloud_tpu[@]}") ssh $(printf '%q' "$NAME") --worker=all --zone=$(printf '%q' "$ZONE") --command=$(printf '%q' "mkdir -p $DEST && tar xzf rsh.tar.gz -C $DEST && cd $DEST && python3 -m venv .venv && .venv/bin/pip install -q -e . 'jax[tpu]'")")
fi
commands+=("$(printf '%q ' "${gcloud_tpu[@]}") ssh $(printf '%q' "$NAME") --worker=all --zone=$(printf '%q' "$ZONE") --command=$(printf '%q' "cd $DEST && .venv/bin/python -m rsh.main --multihost $flags")")
for c in "${commands[@]}"; do
  if [ -n "${RSH_DRY_RUN:-}" ]; then
    echo "$c"
  else
    eval "$c"
  fi
done

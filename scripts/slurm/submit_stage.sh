#!/usr/bin/env bash
# Submits one sbatch template with resources as variables and afterok
# dependencies; prints the job id on stdout (nothing else).
#
#   submit_stage.sh [--after ID|FILE]... [--array N] [--jobid-file FILE] [--name NAME]
#                   [--log-dir DIR] [--dry-run] TEMPLATE [ARGS...]
#
# --after takes a job id or a file holding one (as written by --jobid-file); a
#   job Slurm no longer knows (finished and purged, or a file that does not
#   exist) adds no dependency, so a rerun after a finished stage submits just
#   the missing stages. A job Slurm still knows is always a dependency, also
#   when it has already ended: Slurm then starts the dependant if it completed
#   and cancels it if it failed. All dependencies are afterok.
# --array N submits TEMPLATE as an array of N tasks (0..N-1).
# --jobid-file FILE writes the job id there; if FILE names a job still in the
#   queue, nothing is submitted and that id is printed (rerunning is safe).
# Resources come from the environment: GPUS (>0 adds --gres=gpu:GPUS, per node), CPUS
#   (--cpus-per-task), TASKS (--ntasks), NODES (--nodes), MEM (--mem, e.g. 32G), TIME (--time), PARTITION,
#   ACCOUNT, SBATCH_EXTRA (more sbatch flags, whitespace-separated).
# The job inherits this environment (EVL_BIN, EVL_PARTS_DIR, EVL_DONE_FILE...).
set -euo pipefail

after=() array="" jobid_file="" name="" log_dir="" dry=0
while [ $# -gt 0 ]; do
  case "$1" in
    --after) after+=("$2"); shift 2 ;;
    --array) array=$2; shift 2 ;;
    --jobid-file) jobid_file=$2; shift 2 ;;
    --name) name=$2; shift 2 ;;
    --log-dir) log_dir=$2; shift 2 ;;
    --dry-run) dry=1; shift ;;
    --) shift; break ;;
    -*) echo "submit_stage.sh: unknown option '$1'" >&2; exit 2 ;;
    *) break ;;
  esac
done
[ $# -ge 1 ] || { echo "usage: submit_stage.sh [options] TEMPLATE [ARGS...]" >&2; exit 2; }
template=$1
shift

in_queue() { [ -n "$(squeue -h -j "$1" -o %i 2>/dev/null | head -n1)" ]; }
# Pending, running, or ended but not yet purged (MinJobAge). squeue alone would
# miss a dependency that failed before this submission and let the dependant run.
known_job() { in_queue "$1" || scontrol -o show job "$1" 2>/dev/null | grep -q "JobId="; }

if [ -n "$jobid_file" ] && [ -s "$jobid_file" ] && [ "$dry" = 0 ]; then
  old=$(cat "$jobid_file")
  if in_queue "$old"; then
    echo "submit_stage.sh: $(basename "$template") already queued as job $old" >&2
    echo "$old"
    exit 0
  fi
fi

deps=()
for a in "${after[@]}"; do
  id=$a
  if [[ "$a" == DRYRUN* ]]; then deps+=("$a"); continue; fi
  if [[ ! "$a" =~ ^[0-9]+$ ]]; then
    [ -s "$a" ] || continue
    id=$(cat "$a")
  fi
  if [ "$dry" = 1 ] || known_job "$id"; then deps+=("$id"); fi
done

cmd=(sbatch --parsable)
[ -n "$name" ] && cmd+=(--job-name "$name")
[ -n "$array" ] && cmd+=(--array "0-$((array - 1))")
if [ -n "$log_dir" ]; then
  mkdir -p "$log_dir"
  if [ -n "$array" ]; then cmd+=(--output "$log_dir/%x-%A_%a.out"); else cmd+=(--output "$log_dir/%x-%j.out"); fi
fi
[ ${#deps[@]} -gt 0 ] && cmd+=(--dependency "afterok:$(IFS=:; echo "${deps[*]}")" --kill-on-invalid-dep=yes)
[ "${GPUS:-0}" -gt 0 ] 2>/dev/null && cmd+=(--gres "gpu:${GPUS}")
[ -n "${CPUS:-}" ] && cmd+=(--cpus-per-task "$CPUS")
[ -n "${TASKS:-}" ] && cmd+=(--ntasks "$TASKS")
[ -n "${NODES:-}" ] && cmd+=(--nodes "$NODES")
[ -n "${MEM:-}" ] && cmd+=(--mem "$MEM")
[ -n "${TIME:-}" ] && cmd+=(--time "$TIME")
[ -n "${PARTITION:-}" ] && cmd+=(--partition "$PARTITION")
[ -n "${ACCOUNT:-}" ] && cmd+=(--account "$ACCOUNT")
# shellcheck disable=SC2206
[ -n "${SBATCH_EXTRA:-}" ] && cmd+=(${SBATCH_EXTRA})
cmd+=("$template" "$@")

if [ "$dry" = 1 ]; then
  printf '%q ' "${cmd[@]}" >&2
  echo >&2
  echo "DRYRUN-${name:-$(basename "$template" .sbatch)}"
  exit 0
fi
out=$("${cmd[@]}") || { echo "submit_stage.sh: sbatch failed: ${cmd[*]}" >&2; exit 1; }
id=${out%%;*}  # --parsable prints "id" or "id;cluster"
[[ "$id" =~ ^[0-9]+$ ]] || { echo "submit_stage.sh: sbatch printed '$out', expected a job id" >&2; exit 1; }
if [ -n "$jobid_file" ]; then mkdir -p "$(dirname "$jobid_file")"; echo "$id" >"$jobid_file"; fi
echo "$id"

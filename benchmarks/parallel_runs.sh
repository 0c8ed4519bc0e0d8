#!/usr/bin/env bash
# Several trainings side by side on one machine (made for a lent GPU machine with many cores): one process per
# model, each ended by --time_limit (or early stopping), then every result file, log and best checkpoint
# packed into OUT_DIR for the trip back.
#
# usage: bash benchmarks/parallel_runs.sh OUT_DIR DATASET SEED TIME_LIMIT_S MODEL[,MODEL...] [--key=value ...]
#   e.g. bash benchmarks/parallel_runs.sh /tmp/out ml-1m 2020 420 SASRec,S4Rec,CL4SRec,ICLRec,S4Rec-kmeans \
#            --data_source=../shared/datasets/ml-1m/ml-1m_item5core.txt
# Env: THREADS (torch/OpenMP threads per process, default: cores / processes, at least 1), PYTHON (default python3),
# KILL_AFTER (seconds: a backstop that kills a training still running then), RESUME (a folder with an earlier
# OUT_DIR's checkpoints: each model whose <model>-<dataset>-*.last.pth(.gz) is there continues from it, so a long
# training runs in slices, one lease each).
# OUT_DIR gets runs.tar.gz (result JSONs, logs) and, per model, its best checkpoint and its resumable .last.pth
# (<checkpoint>.pth.gz and <checkpoint>.last.pth.gz; the .last.pth alone when no epoch ended).
set -uo pipefail
[ $# -ge 5 ] || { sed -n 6,12p "$0" >&2; exit 2; }
out=$1 dataset=$2 seed=$3 limit=$4 models=$5
shift 5
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
IFS=, read -r -a names <<< "$models"
threads=${THREADS:-$(( $(nproc) / ${#names[@]} ))}
[ "$threads" -ge 1 ] || threads=1
work=$(mktemp -d /tmp/parallel-runs.XXXXXX)
trap 'rm -rf "$work"' EXIT
mkdir -p "$out" "$work/results" "$work/logs"

# the dataset once, before the processes that would all convert it at the same time
option() { printf '%s\n' "${@:2}" | sed -n "s/^--$1=//p" | tail -1; }
"$PY" -c "import sys; from s4rec_recbole.data import prepare_dataset; from s4rec_recbole.config import DATASET_DIR
prepare_dataset(sys.argv[1], sys.argv[2] or str(DATASET_DIR), data_source=sys.argv[3] or None)" \
  "$dataset" "$(option data_path "$@")" "$(option data_source "$@")" || exit 1

start=$(date +%s)
for m in "${names[@]}"; do
  mkdir -p "$work/ckpt/$m"
  resume=()
  last=$(ls -t "${RESUME:-/nonexistent}/$m-$dataset"-*.last.pth* 2>/dev/null | head -1)
  if [ -n "$last" ]; then  # the .last.pth and its best checkpoint, side by side (the resume finds it there)
    for f in "$last" "${last/.last.pth/.pth}"; do
      [ -f "$f" ] || continue
      case $f in *.gz) gunzip -c "$f" > "$work/ckpt/$m/$(basename "${f%.gz}")" ;; *) cp "$f" "$work/ckpt/$m/" ;; esac
    done
    resume=(--resume="$work/ckpt/$m/$(basename "${last%.gz}")")
    echo "$m continues from $last"
  fi
  OMP_NUM_THREADS=$threads PYTHONUNBUFFERED=1 ${KILL_AFTER:+timeout -s KILL "$KILL_AFTER"} "$PY" run_s4rec.py --dataset="$dataset" --model="$m" --seed="$seed" \
    --time_limit="$limit" --results_dir="$work/results" --checkpoint_dir="$work/ckpt/$m" "${resume[@]}" "$@" \
    > "$work/logs/$m.log" 2>&1 &
done
wait
echo "all ${#names[@]} trainings ended after $(( $(date +%s) - start )) s ($threads threads each)"

for m in "${names[@]}"; do
  for ckpt in "$work/ckpt/$m"/*.pth; do
    [ -f "$ckpt" ] && gzip -c "$ckpt" > "$out/$(basename "$ckpt").gz"
  done
  tail -3 "$work/logs/$m.log" | sed "s/^/[$m] /"
done
tar czf "$out/runs.tar.gz" -C "$work" results logs
ls -la "$out"

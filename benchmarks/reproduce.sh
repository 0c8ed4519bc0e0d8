#!/bin/bash
# The reproduction matrix of the README's results section, one part per argument:
#
#   benchmarks/reproduce.sh main       S4Rec vs SASRec on Beauty, history masked (the paper's protocol): RecBole's
#                                      untuned SASRec (SASRec-recbole) and the tuned one, Beauty's SASRec default
#   benchmarks/reproduce.sh baselines  + CL4SRec, ICLRec, S4Rec-kmeans on Beauty: ICLRec both tuned (its Beauty default)
#                                      and with its defaults (properties/model/ICLRec.yaml)
#   benchmarks/reproduce.sh unmasked   the same models under RecBole's protocol (history not masked)
#   benchmarks/reproduce.sh ablation   Table 3 on Beauty: SR, SR+CSD, without CSD, without the adversary, K-means
#   benchmarks/reproduce.sh ksweep     S4Rec with K = 32 ... 512 prototypes on Beauty (then: python benchmarks/plot_sweep.py
#                                      --key=n_clusters --out=results/ksweep-amazon-beauty <their run files>)
#   benchmarks/reproduce.sh samples    SR and S4Rec on whole sequences (train_samples: sequence, batch 256) on Beauty
#   benchmarks/reproduce.sh sports     the same models on Sports and Outdoors
#   benchmarks/reproduce.sh ml-1m      the five models on MovieLens-1M, on whole sequences (the ML-1M defaults of
#                                      properties/dataset/ml-1m/); S4Rec-SR stands for SASRec there: RecBole's SASRec
#                                      trains on prefix samples only, days per run on a CPU
#   benchmarks/reproduce.sh tune       the same budget for SASRec, CL4SRec, ICLRec and S4Rec on Beauty: a 4-trial
#                                      random search each over the encoder space they share
#                                      (properties/hyper/SASRec.yaml: layers, dropouts, learning rate; the same four
#                                      draws for every model, loss weights at their defaults), validation only, each
#                                      trial to convergence; copy a search's best.yaml to
#                                      properties/dataset/amazon-beauty/<model>.yaml to make it that model's default.
#                                      The models' own spaces (properties/hyper/<model>.yaml) are for wider searches
#   benchmarks/reproduce.sh all        everything above, in this order
#
# Every part but tune is a comparison (python run_s4rec.py --model=A,B,... --seeds=...): finished runs are reused
# and a killed run continues from its saved/*.last.pth, so the same command can be started again after a crash, a
# reboot or the end of a session, on a CPU or a GPU; a search likewise keeps its finished trials and resumes the
# one that was training. SEEDS (default 2020,2021,2022; not used by tune, whose trials use the configured seed)
# and extra --key=value arguments after the part name apply to every run of the part, e.g.
# SEEDS=2020 benchmarks/reproduce.sh main.
# Results: results/compare-<dataset>-<time>.md/.csv/.png and results/runs/*.json; a search's in
# results/tune-<model>-<dataset>-random-<key>/.
set -euo pipefail
cd "$(dirname "$0")/.."
part=${1:-}
shift || true
SEEDS=${SEEDS:-2020,2021,2022}
# ML-1M: S4Rec-SR (SASRec's loss on S4Rec's code path, which trains on whole sequences) for SASRec
ML1M=S4Rec,S4Rec-SR,CL4SRec,ICLRec,S4Rec-kmeans
# where properties/dataset/<dataset>/SASRec.yaml makes a tuned SASRec the default (Beauty, Sports), RecBole's untuned
# SASRec too, as the README's tables show both
SIX=S4Rec,SASRec-recbole,SASRec,CL4SRec,ICLRec,S4Rec-kmeans
# ICLRec's own defaults where properties/dataset/<dataset>/ICLRec.yaml makes a tuned ICLRec the default (Beauty)
ICLREC_DEFAULTS=(--model=ICLRec --n_layers=2 --attn_dropout_prob=0.5 --learning_rate=0.001)
run() { echo "+ python run_s4rec.py $*"; python run_s4rec.py "$@"; }

case "$part" in
  tune) for m in SASRec CL4SRec ICLRec S4Rec; do
          run --tune=properties/hyper/SASRec.yaml --model=$m --dataset=amazon-beauty --algo=random --max_trials=4 "$@"; done ;;
  main) run --dataset=amazon-beauty --model=S4Rec,SASRec-recbole,SASRec --seeds="$SEEDS" "$@" ;;
  baselines) run --dataset=amazon-beauty --model=$SIX --seeds="$SEEDS" "$@"
             run --dataset=amazon-beauty "${ICLREC_DEFAULTS[@]}" --seeds="$SEEDS" "$@" ;;
  unmasked) run --dataset=amazon-beauty --model=$SIX --seeds="$SEEDS" --mask_history=False "$@"
            run --dataset=amazon-beauty "${ICLREC_DEFAULTS[@]}" --seeds="$SEEDS" --mask_history=False "$@" ;;
  ablation) run --dataset=amazon-beauty --model=S4Rec,S4Rec-SR,S4Rec-SR+CSD,S4Rec-noCSD,S4Rec-noadv,S4Rec-kmeans \
              --seeds="$SEEDS" "$@" ;;
  samples) run --dataset=amazon-beauty --model=S4Rec-SR,S4Rec --seeds="$SEEDS" --train_samples=sequence \
              --train_batch_size=256 "$@" ;;
  ksweep) for k in 32 64 128 256 512; do run --dataset=amazon-beauty --model=S4Rec --n_clusters=$k --seeds="$SEEDS" "$@"; done ;;
  sports) run --dataset=amazon-sports-outdoors --model=$SIX --seeds="$SEEDS" "$@" ;;
  ml-1m) run --dataset=ml-1m --model=$ML1M --seeds="$SEEDS" "$@" ;;
  all) for p in main baselines unmasked ablation ksweep samples sports ml-1m tune; do "$0" "$p" "$@"; done ;;
  *) awk 'NR > 1 && !/^#/ {exit} NR > 1 {sub(/^# ?/, ""); print}' "$0"; echo "error: expected a part name, got '${part}'" >&2; exit 2 ;;
esac

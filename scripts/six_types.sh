#!/usr/bin/env bash
# The six-type tagger and span selector (issue 23): data, training in stages, calibration, evaluation.
#
#   bash scripts/six_types.sh data                 # tmVar3 split, the CellLine documents, JNLPBA's lines (seconds)
#   bash scripts/six_types.sh tagger [--resume]    # LoRA stage: INIT (default: the shipped adapter), OUT, STEPS, LR, SEED (hours)
#   bash scripts/six_types.sh selector             # span selector on the same sources (about an hour)
#   bash scripts/six_types.sh calibrate ADAPTER    # the selector's thresholds on ADAPTER's spans (minutes)
#   bash scripts/six_types.sh eval ADAPTER SELECTOR NAME [biored bc5cdr ncbi s800 tmvar3]   # EVAL_ARGS: more bulkner eval options
#
# Everything is written under runs/ (not in git). A training run owns both cores: run one at a time.
set -euo pipefail
cd "$(dirname "$0")/.."
B=.venv/bin/bulkner; D=../shared/data/ner; R=runs/data
SIX=Gene,Chemical,Disease,Species,Variant,CellLine
export VLLM_ENABLE_V1_MULTIPROCESSING=0 VLLM_CPU_KVCACHE_SPACE=${VLLM_CPU_KVCACHE_SPACE:-4}
[ -e /usr/lib/x86_64-linux-gnu/libjemalloc.so.2 ] && export LD_PRELOAD=/usr/lib/x86_64-linux-gnu/libjemalloc.so.2

# Each source's prompt lists only the types it annotates (docs/types.md). BioRED twice, its and
# tmVar3's CellLine documents once more (100 + 45 mentions: the rare type), NCBI-disease's first
# 300 documents, and 200 JNLPBA documents with their cell_line mentions cut to the line's name
# (scripts/jnlpba_celllines.py: JNLPBA marks "Jurkat T cells", BioRED the name alone).
SOURCES=(
  --source "pubtator:$D/biored/Train.filtered.PubTator:$SIX"
  --source "pubtator:$D/biored/Train.filtered.PubTator:$SIX"
  --source "pubtator:$R/biored-train-cellline.PubTator:$SIX"
  --source "pubtator:$R/tmvar3-train-cellline.PubTator:Gene,Species,Variant,CellLine"
  --source "pubtator:$R/tmvar3-train.PubTator:Gene,Species,Variant,CellLine"
  --source "pubtator:$D/bc5cdr/CDR_TrainingSet.PubTator.txt:Chemical,Disease"
  --source "pubtator:$D/ncbi_disease/NCBItrainset_corpus.txt:Disease:300"
  --source "brat:$D/s800/train:Species"
  --source "pubtator:$R/jnlpba-train-cellline.PubTator:CellLine:200"
)
# The selector sees each corpus once (it masks a source's unannotated types itself), BioRED (the
# target's conventions) and JNLPBA's cell-line names (the rare type) twice: a source listed twice
# weighs twice in training and is held out once.
SELECTOR_SOURCES=(
  --source "pubtator:$D/biored/Train.filtered.PubTator:$SIX"
  --source "pubtator:$D/biored/Train.filtered.PubTator:$SIX"
  --source "pubtator:$R/tmvar3-train.PubTator:Gene,Species,Variant,CellLine"
  --source "pubtator:$D/bc5cdr/CDR_TrainingSet.PubTator.txt:Chemical,Disease"
  --source "pubtator:$D/ncbi_disease/NCBItrainset_corpus.txt:Disease"
  --source "brat:$D/s800/train:Species"
  --source "pubtator:$R/jnlpba-train-cellline.PubTator:CellLine"
  --source "pubtator:$R/jnlpba-train-cellline.PubTator:CellLine"
)

case "${1:-}" in
  data)
    .venv/bin/python scripts/split_pubtator.py $D/tmvar3/tmvar_v3.filtered.txt \
      --train $R/tmvar3-train.PubTator --held-out $R/tmvar3-dev.PubTator --every 5
    .venv/bin/python scripts/select_pubtator.py $D/biored/Train.filtered.PubTator --label CellLine --out $R/biored-train-cellline.PubTator
    .venv/bin/python scripts/select_pubtator.py $R/tmvar3-train.PubTator --label CellLine --out $R/tmvar3-train-cellline.PubTator
    .venv/bin/python scripts/jnlpba_celllines.py $D/jnlpba/standoff-train.tar.gz --out $R/jnlpba-train-cellline.PubTator
    ;;
  tagger)
    shift
    $B train "${SOURCES[@]}" --answer-format brackets --init-adapter "${INIT:-bulkner/data/default-adapter}" \
      --out "${OUT:-runs/six/tagger}" --epochs 3 --max-steps "${STEPS:-420}" --lr "${LR:-2e-4}" --seed "${SEED:-0}" \
      --batch-size 32 --max-batch-tokens 4096 --save-every 25 "$@"
    ;;
  selector)
    $B train-selector "${SELECTOR_SOURCES[@]}" --out "${OUT:-runs/six/selector}" --epochs 3
    ;;
  calibrate)
    $B train-selector "${SELECTOR_SOURCES[@]}" --out "${OUT:-runs/six/selector}" --calibrate-only --adapter "$2" "${@:3}"
    ;;
  eval)
    adapter=$2 selector=$3 name=$4; shift 4
    for set in "${@:-biored}"; do
      case $set in
        biored) gold=$D/biored/Dev.filtered.PubTator; fmt=pubtator; types=$SIX ;;
        bc5cdr) gold=$D/bc5cdr/CDR_DevelopmentSet.PubTator.txt; fmt=pubtator; types=Chemical,Disease ;;
        ncbi) gold=$D/ncbi_disease/NCBIdevelopset_corpus.txt; fmt=pubtator; types=Disease ;;
        s800) gold=$D/s800/devel; fmt=brat; types=Species ;;
        tmvar3) gold=$R/tmvar3-dev.PubTator; fmt=pubtator; types=Gene,Species,Variant,CellLine ;;
        *) echo "unknown set $set" >&2; exit 2 ;;
      esac
      mkdir -p runs/six/eval
      $B eval --gold "$gold" --format $fmt --types $types --adapter "$adapter" --selector "$selector" \
        --json runs/six/eval/$name-$set.json --predictions runs/six/eval/$name-$set.jsonl ${EVAL_ARGS:-}
    done
    ;;
  *) sed -n '2,9p' "$0"; exit 2 ;;
esac

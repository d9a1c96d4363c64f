#!/usr/bin/env bash
# Evaluate five models on the held-out RFC test set and write results/results.md:
# the base model at 512 tokens, its copy and interpolate extensions (untrained),
# and the two trained checkpoints, which are trained first if they are missing.
#
#   bash eval.sh                 # default data, extended models at 1024 tokens
#   LENGTH=2048 bash eval.sh     # the untrained extensions at another length
#
# A cell whose results/<dataset>/<model>.json exists is skipped, so a stopped
# run resumes where it was; delete the file to redo a cell.
set -euo pipefail
cd "$(dirname "$0")"

length=${LENGTH:-1024}
dataset_dir=$(python data.py | tail -n 1)
dataset=$(basename "$dataset_dir")
out=results/$dataset
mkdir -p "$out" results/runs

for trainer in origin_train efficient_train; do
    if [[ ! -f output/$trainer/model.safetensors ]]; then
        echo "== training output/$trainer"
        python "$trainer.py" --output_dir "output/$trainer"
    fi
done

evaluate() {  # evaluate NAME [eval.py arguments...]
    local name=$1
    shift
    if [[ -f $out/$name.json ]]; then
        echo "== $dataset / $name: done, skipped"
        return
    fi
    echo "== $dataset / $name"
    python eval.py --data_dir "$dataset_dir/test" "$@" \
        --run_file "results/runs/$dataset-$name.trec" --output_file "$out/$name.json"
}

evaluate base-512
evaluate "copy-$length" --max_length "$length" --extend_method copy
evaluate "interpolate-$length" --max_length "$length" --extend_method interpolate
evaluate origin_train --model_name_or_path output/origin_train
evaluate efficient_train --model_name_or_path output/efficient_train

python report.py results

#!/usr/bin/env bash
# Three long-document datasets x five models, plus BM25 and chunked max-sim for reference,
# into results/results.md (see report.py). Models: the base model at its 512 positions, its
# copy and interpolate extensions (untrained), and origin_train / efficient_train fine-tuned
# on the three train splits together (trained first when missing).
#
#   bash eval.sh                                # everything: all RFC packages, 8192 tokens
#   bash eval.sh --length 1024 --rfc small      # the README's table
#   bash eval.sh --length 512 --rfc small --max_queries 40 --max_docs 150 --out results/quick
#
# Options: --length N        document tokens of the long models (default 8192)
#          --rfc all|small   RFC packages: all eight, or three (default all)
#          --max_queries N   a fixed sample of N test queries per dataset (default: all)
#          --max_docs N      their relevant documents plus others up to N (default: all)
#          --datasets LIST   some of "rfc man kernel" (default: all three)
#          --no_full_body    skip the second table (RFCs with their introduction)
#          --out DIR         results directory (default results)
#
# A cell whose DIR/<dataset>/<model>.json exists is skipped, so a stopped run resumes where
# it was; delete the file to redo a cell. DIR remembers its options and refuses others.
set -euo pipefail
cd "$(dirname "$0")"

length=8192 rfc=all max_queries=0 max_docs=0 datasets="rfc man kernel" full_body=1 out=results
while (($#)); do
    case $1 in
        --no_full_body) full_body=0; shift; continue ;;
        --length | --rfc | --max_queries | --max_docs | --datasets | --out)
            value=${2:?eval.sh: $1 needs a value} ;;
        *) echo "eval.sh: unknown option $1 (see the top of eval.sh)" >&2; exit 2 ;;
    esac
    case $1 in
        --length) length=$value ;;
        --rfc) rfc=$value ;;
        --max_queries) max_queries=$value ;;
        --max_docs) max_docs=$value ;;
        --datasets) datasets=$value ;;
        --out) out=$value ;;
    esac
    shift 2
done

fail() { echo "eval.sh: $*" >&2; exit 2; }
[[ $length =~ ^[1-9][0-9]*$ ]] || fail "--length must be a positive integer, not '$length'"
for n in "$max_queries" "$max_docs"; do
    [[ $n =~ ^[0-9]+$ ]] || fail "--max_queries and --max_docs take an integer >= 0, not '$n'"
done
[[ $rfc == all || $rfc == small ]] || fail "--rfc is all or small, not '$rfc'"
read -r -a dataset_list <<< "$datasets"
((${#dataset_list[@]})) || fail "--datasets names none of rfc, man, kernel"
for name in "${dataset_list[@]}"; do
    [[ $name == rfc || $name == man || $name == kernel ]] || fail "unknown dataset '$name'"
done
[[ $(printf '%s\n' "${dataset_list[@]}" | sort | uniq -d) == "" ]] || fail "--datasets repeats a name"

settings="length=$length rfc=$rfc max_queries=$max_queries max_docs=$max_docs"
if [[ -f $out/settings.txt && $(cat "$out/settings.txt") != "$settings" ]]; then
    echo "eval.sh: $out holds results made with: $(cat "$out/settings.txt")" >&2
    echo "         not with: $settings; pass another --out or delete $out" >&2
    exit 2
fi
mkdir -p "$out/runs"
echo "$settings" > "$out/settings.txt"

# data: each builder prints its directory last
declare -A dirs
for name in "${dataset_list[@]}"; do
    case $name in
        rfc) dirs[rfc]=$(python data.py --package_set "$rfc" | tail -n 1) ;;
        *) dirs[$name]=$(python data.py --corpus "$name" | tail -n 1) ;;
    esac
done
if ((full_body)); then
    full_dir=$(python data.py --variant full --package_set "$rfc" | tail -n 1)
fi

# one model per trainer, trained on every train split, kept under a key of its data and length.
# TODO(batches): the shuffled batches mix corpora, whose cross-corpus negatives are easy;
# batches drawn from one corpus at a time would need the trainers to know each pair's source.
train_files=()
for name in "${dataset_list[@]}"; do train_files+=("${dirs[$name]}/train.jsonl"); done
key=$(cat "${train_files[@]}" | sha1sum | cut -c1-10)
models=output/eval-$key-$length
mkdir -p "$models"
if [[ ! -f $models/train.jsonl ]]; then
    cat "${train_files[@]}" > "$models/.train.jsonl.tmp"
    mv "$models/.train.jsonl.tmp" "$models/train.jsonl"
fi
for trainer in origin_train efficient_train; do
    dir=$models/$trainer
    [[ -f $dir/model.safetensors ]] && continue
    resume=()
    if compgen -G "$dir/checkpoint-*" > /dev/null; then
        resume=(--resume_from_checkpoint last)
    elif [[ -d $dir ]]; then
        resume=(--overwrite_output_dir)  # a run stopped before its first checkpoint
    fi
    echo "== training $dir on $models/train.jsonl at $length tokens"
    python "$trainer.py" --train_file "$models/train.jsonl" --max_length "$length" \
        --output_dir "$dir" "${resume[@]}"
done

cells=7
total=$((cells * (${#dataset_list[@]} + full_body)))
done_cells=0
evaluate() {  # evaluate RESULTS_DIR DATASET_DIR NAME [eval.py arguments...]
    local results=$1 data_dir=$2 name=$3
    shift 3
    local dataset
    dataset=$(basename "$data_dir")
    done_cells=$((done_cells + 1))
    if [[ -f $results/$dataset/$name.json ]]; then
        echo "== [$done_cells/$total] $dataset / $name: done, skipped"
        return
    fi
    echo "== [$done_cells/$total] $dataset / $name"
    local start=$SECONDS
    python eval.py --data_dir "$data_dir/test" --max_queries "$max_queries" \
        --max_docs "$max_docs" --run_file "$out/runs/$dataset-$name.trec" \
        --output_file "$results/$dataset/$name.json" "$@" > /dev/null
    echo "   $((SECONDS - start)) s"
}

all_models() {  # all_models RESULTS_DIR DATASET_DIR
    evaluate "$1" "$2" bm25 --retriever bm25
    evaluate "$1" "$2" base-512
    evaluate "$1" "$2" "maxsim-$length" --retriever maxsim --max_length "$length"
    evaluate "$1" "$2" "copy-$length" --max_length "$length" --extend_method copy
    evaluate "$1" "$2" "interpolate-$length" --max_length "$length" --extend_method interpolate
    evaluate "$1" "$2" origin_train --model_name_or_path "$models/origin_train"
    evaluate "$1" "$2" efficient_train --model_name_or_path "$models/efficient_train"
}

for name in "${dataset_list[@]}"; do all_models "$out" "${dirs[$name]}"; done
if ((full_body)); then all_models "$out/full-body" "$full_dir"; fi

python report.py "$out"

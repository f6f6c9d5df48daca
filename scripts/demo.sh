#!/usr/bin/env bash
# Factor Transfer in one command: a ResNet-20 student trained alone and with FT from a
# ResNet-56 teacher (k = 0.5, beta = 500) on CIFAR-10, over several seeds, then both
# errors, their per-seed difference, the teacher's and the paper's numbers.  It installs
# what it needs into ./.venv first.
#
#   bash scripts/demo.sh                       # CIFAR-10 via torchvision (downloads into ./data)
#   bash scripts/demo.sh path/to/cifar10-jpeg.tar.gz   # offline: an image-folder tree or its archive
#
# The teacher and its paraphraser are the shipped ones (results/shipped/, trained by this
# repository on the CIFAR-10 JPEG copy; results/shipped/README.md), so only the students
# train.  On torchvision's CIFAR-10 they teach with --teacher-data-copy (the same images,
# without JPEG's rounding) and the summary gives the teacher's error on those images.
#
# Environment:
#   TEACHER=auto (default: shipped when results/shipped/ holds them, else train)
#         | shipped | train             train: the teacher (TEACHER_ITERS, default 1600)
#                                       and its paraphraser (PARA_ITERS, 60) first, here
#   SEEDS ("0 1 2"), STUDENT_ITERS (200), TEST_SUBSET (all), OUT (runs/demo), DEVICE (auto),
#   DATA_ROOT (./data, for torchvision), EXTRA_ARGS (added to every training command)
#   SHIPPED_TEACHER, SHIPPED_PARAPHRASER   other shipped folders (default results/shipped/...)
# Re-running resumes or skips finished runs.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

if [ $# -ge 1 ]; then
    data=(--dataset folder --data-root "$1")
    copy=()
else
    data=(--dataset cifar10 --data-root "${DATA_ROOT:-./data}")
    copy=(--teacher-data-copy)  # the shipped teacher learned on the JPEG copy of these images
fi
out=${OUT:-runs/demo}
# shellcheck disable=SC2206  # EXTRA_ARGS: words, split on purpose
common=("${data[@]}" ${TEST_SUBSET:+--test-subset "$TEST_SUBSET"} --device "${DEVICE:-auto}" --progress on
        ${EXTRA_ARGS:-})
student_iters=${STUDENT_ITERS:-200}

shipped_teacher=${SHIPPED_TEACHER:-results/shipped/teacher-resnet56}
shipped_para=${SHIPPED_PARAPHRASER:-results/shipped/para-resnet56-k0.5}
seeds=(${SEEDS:-0 1 2})
n=0 total=$((2 * ${#seeds[@]}))
next_run() {  # folder, what: says "run i of N: what"; false (skip it) when the run is finished
    n=$((n + 1))
    if [ -f "$1/final.json" ]; then echo "demo.sh: run $n of $total: $2 skipped (finished)" >&2; return 1; fi
    echo "demo.sh: run $n of $total: $2" >&2
}
mode=${TEACHER:-auto}
if [ "$mode" = auto ]; then
    mode=train
    if [ -f "$shipped_teacher/checkpoint.pt" ] && [ -f "$shipped_para/checkpoint.pt" ]; then mode=shipped; fi
    echo "demo.sh: TEACHER=$mode" >&2
fi
case $mode in
shipped)
    teacher=$shipped_teacher para=$shipped_para
    for run in "$teacher" "$para"; do
        [ -f "$run/checkpoint.pt" ] || { echo "demo.sh: $run/checkpoint.pt is missing; run TEACHER=train bash scripts/demo.sh" >&2; exit 2; }
    done
    ;;
train)
    teacher=$out/teacher-resnet56 para=$out/para-resnet56-k0.5 copy=()
    teacher_iters=${TEACHER_ITERS:-1600} para_iters=${PARA_ITERS:-60} total=$((total + 2))
    ! next_run "$teacher" "teacher ResNet-56, $teacher_iters iterations" ||
        python train_teacher.py "${common[@]}" --arch resnet56 --iters "$teacher_iters" \
            --eval-every "$teacher_iters" --out "$teacher" > /dev/null
    ! next_run "$para" "paraphraser k = 0.5 of the ResNet-56, $para_iters iterations" ||
        python train_paraphraser.py "${common[@]}" --teacher "$teacher" --k 0.5 \
            --iters "$para_iters" --eval-every "$para_iters" --out "$para" > /dev/null
    ;;
*)
    echo "demo.sh: TEACHER must be auto, shipped or train, got '$mode'" >&2; exit 2 ;;
esac

for seed in "${seeds[@]}"; do
    ! next_run "$out/ce-resnet20-s$seed" "student ResNet-20 alone, seed $seed, $student_iters iterations" ||
    python train_student.py "${common[@]}" --method ce --arch resnet20 --iters "$student_iters" \
        --eval-every "$student_iters" --seed "$seed" --out "$out/ce-resnet20-s$seed" > /dev/null
    ! next_run "$out/ft-resnet20-s$seed" "student ResNet-20 with FT, seed $seed, $student_iters iterations" ||
    python train_student.py "${common[@]}" "${copy[@]}" --method ft --arch resnet20 --teacher "$teacher" \
        --paraphraser "$para" --beta 500 --iters "$student_iters" --eval-every "$student_iters" \
        --seed "$seed" --out "$out/ft-resnet20-s$seed" > /dev/null
done

python scripts/demo_summary.py "$out" --teacher "$teacher" --seeds ${SEEDS:-0 1 2}

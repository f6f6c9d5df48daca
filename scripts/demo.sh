#!/usr/bin/env bash
# A short demonstration of the three stages plus the student alone (CIFAR-10,
# ResNet-56 teacher -> ResNet-20 student, k = 0.5, beta = 500), about 10 minutes on
# 2 CPU cores.  It installs what it needs into ./.venv first.
#
#   bash scripts/demo.sh                       # CIFAR-10 via torchvision (downloads into ./data)
#   bash scripts/demo.sh path/to/cifar10-jpeg.tar.gz   # offline: an image-folder tree or its archive
#
# Scale knobs (environment): TEACHER_ITERS (default 400), STUDENT_ITERS (200),
# PARA_ITERS (40), TEST_SUBSET (2000), OUT (runs/demo), DEVICE (auto).
# The teacher gets twice the students' iterations: at short schedules a deeper
# teacher is otherwise no better than the student (docs/reproducing.md, "Reduced scale").
# Re-running resumes or skips finished stages.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/env.sh

if [ $# -ge 1 ]; then
    data=(--dataset folder --data-root "$1")
else
    data=(--dataset cifar10 --data-root ./data)
fi
out=${OUT:-runs/demo}
common=("${data[@]}" --test-subset "${TEST_SUBSET:-2000}" --device "${DEVICE:-auto}" --progress on)
teacher_iters=${TEACHER_ITERS:-400}
student_iters=${STUDENT_ITERS:-200}

python train_teacher.py "${common[@]}" --arch resnet56 --iters "$teacher_iters" \
    --eval-every "$teacher_iters" --out "$out/teacher-resnet56" > /dev/null
python train_paraphraser.py "${common[@]}" --teacher "$out/teacher-resnet56" --k 0.5 \
    --iters "${PARA_ITERS:-40}" --eval-every "${PARA_ITERS:-40}" --out "$out/para-resnet56-k0.5" > /dev/null
python train_student.py "${common[@]}" --method ce --arch resnet20 --iters "$student_iters" \
    --eval-every "$student_iters" --out "$out/ce-resnet20" > /dev/null
python train_student.py "${common[@]}" --method ft --arch resnet20 --teacher "$out/teacher-resnet56" \
    --paraphraser "$out/para-resnet56-k0.5" --beta 500 --iters "$student_iters" \
    --eval-every "$student_iters" --out "$out/ft-resnet20" > /dev/null

python - "$out" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
rows = [("teacher ResNet-56", "teacher-resnet56"), ("student ResNet-20 alone", "ce-resnet20"),
        ("student ResNet-20 + FT", "ft-resnet20")]
print(f"\n{'run':<26} {'iters':>6} {'test error %':>13} {'wall s':>8}")
for name, folder in rows:
    final = json.loads((out / folder / "final.json").read_text())
    print(f"{name:<26} {final['iters']:>6} {final['test_error_last']:>13.2f} {final['wall_time_s']:>8.0f}")
PY

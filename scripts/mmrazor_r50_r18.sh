#!/usr/bin/env bash
# MMRazor's published Factor Transfer setting: CIFAR-10, ResNet-50 teacher, ResNet-18
# student (CIFAR variants), paraphraser k = 0.5; FT and the student alone.  MMRazor's
# figures (accuracy): teacher 95.55 top-1; ResNet-18 alone 94.82; FT 94.86 / 99.88 top-5.
#     scripts/mmrazor_r50_r18.sh ; python scripts/report.py runs --table mmrazor
source "$(dirname "$0")/lib.sh"

D=$D10 S=resnet18_cifar T=resnet50_cifar
for s in $(seeds); do
  t=$D/teacher-$T-s$s p=$D/para-$T-k0.5-s$s
  run $t                        train_teacher.py --arch $T $C10 $TEACHER_SCHEDULE --seed $s
  run $p                        train_paraphraser.py --teacher $t --k 0.5 $C10 $PARA_SCHEDULE --seed $s
  run $D/ce-$S-s$s              train_student.py --method ce --arch $S $C10 $STUDENT_SCHEDULE --seed $s
  run $D/ft-$S-from-$T-k0.5-s$s train_student.py --method ft --arch $S --teacher $t --paraphraser $p $FT $C10 $STUDENT_SCHEDULE --seed $s
done
schedule

#!/usr/bin/env bash
# Table 7, L_FT with p = 1 vs p = 2, ResNet-20 student: CIFAR-10 with a ResNet-56 teacher,
# CIFAR-100 with a ResNet-110 teacher, and the students alone.  The paper's p = 1 figures
# equal its best k of the sweep (Tables 1 and 3): k1 = 0.5 on CIFAR-10, k5 = 4 on CIFAR-100;
# so the p = 1 runs are those of Tables 1 and 3.  ONLY=^cifar10/ (or ^folder/) runs one dataset.
#     scripts/table7.sh ; python scripts/report.py runs --table 7
source "$(dirname "$0")/lib.sh"

S=resnet20
for s in $(seeds); do
  for setting in 10:resnet56:0.5 100:resnet110:4; do
    IFS=: read -r dataset T k <<<"$setting"
    if [[ $dataset == 10 ]]; then D=$D10 DATA=$C10; else D=$D100 DATA=$C100; fi
    t=$D/teacher-$T-s$s p=$D/para-$T-k$k-s$s
    run $t                  train_teacher.py --arch $T $DATA $TEACHER_SCHEDULE --seed $s
    run $p                  train_paraphraser.py --teacher $t --k $k $DATA $PARA_SCHEDULE $PARA_HOLDOUT --seed $s
    run $D/ce-$S-s$s        train_student.py --method ce --arch $S $DATA $STUDENT_SCHEDULE --seed $s
    run $D/ft-$S-from-$T-k$k-s$s    train_student.py --method ft --arch $S --teacher $t --paraphraser $p $FT $DATA $STUDENT_SCHEDULE --seed $s
    run $D/ft-$S-from-$T-k$k-p2-s$s train_student.py --method ft --arch $S --teacher $t --paraphraser $p --beta 500 --p 2 $DATA $STUDENT_SCHEDULE --seed $s
  done
done
schedule

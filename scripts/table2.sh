#!/usr/bin/env bash
# Table 2, CIFAR-10, wide ResNets of equal width: student alone, AT, F-ActT, KD, AT+KD,
# the teacher, and FT (k = 0.5).  Every run uses --recipe at: the paper trained this
# table's teacher and student "with the same experimental environment of [31]" (the
# attention-transfer authors' CIFAR recipe: 200 epochs, lr x0.2 and a fresh momentum
# before the epochs numbered 60/120/160 from 1, reflect padding, their normalization); the first six columns are that paper's figures.
#     scripts/table2.sh ; python scripts/report.py runs --table 2
source "$(dirname "$0")/lib.sh"

D=$D10/recipe-at
C10="$C10 --recipe at" PAIRS=$(pairs 2)
for s in $(seeds); do
  for pair in $PAIRS; do
    S=${pair%:*} T=${pair#*:}
    t=$D/teacher-$T-s$s p=$D/para-$T-k0.5-s$s
    run $t                      train_teacher.py --arch $T $C10 $TEACHER_SCHEDULE --seed $s
    run $p                      train_paraphraser.py --teacher $t --k 0.5 $C10 $PARA_SCHEDULE $PARA_HOLDOUT --seed $s
    run $D/ce-$S-s$s            train_student.py --method ce --arch $S $C10 $STUDENT_SCHEDULE --seed $s
    run $D/at-$S-from-$T-s$s    train_student.py --method at --arch $S --teacher $t $AT $C10 $STUDENT_SCHEDULE --seed $s
    run $D/fact-$S-from-$T-s$s  train_student.py --method fact --arch $S --teacher $t $AT $C10 $STUDENT_SCHEDULE --seed $s
    run $D/kd-$S-from-$T-s$s    train_student.py --method kd --arch $S --teacher $t $KD $C10 $STUDENT_SCHEDULE --seed $s
    run $D/at+kd-$S-from-$T-s$s train_student.py --method at+kd --arch $S --teacher $t $AT $KD $C10 $STUDENT_SCHEDULE --seed $s
    run $D/ft-$S-from-$T-k0.5-s$s train_student.py --method ft --arch $S --teacher $t --paraphraser $p $FT $C10 $STUDENT_SCHEDULE --seed $s
  done
done
schedule

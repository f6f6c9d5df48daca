#!/usr/bin/env bash
# Table 3, CIFAR-100, ResNet-110 teacher: student alone, AT, KD, FT (best over the k sweep),
# AT+KD, FT+KD (k = 0.5), teacher; and the sweep with the CAE and RAE paraphrasers.
# (The paraphraser and translator have no BatchNorm on CIFAR-100: train_paraphraser.py's
# default follows the paper's appendix.)
#     scripts/table3.sh ; python scripts/report.py runs --table 3
source "$(dirname "$0")/lib.sh"

D=$D100 PAIRS=$(pairs 3)
for s in $(seeds); do
  for pair in $PAIRS; do
    S=${pair%:*} T=${pair#*:}
    t=$D/teacher-$T-s$s
    run $t                      train_teacher.py --arch $T $C100 $TEACHER_SCHEDULE --seed $s
    run $D/ce-$S-s$s            train_student.py --method ce --arch $S $C100 $STUDENT_SCHEDULE --seed $s
    run $D/at-$S-from-$T-s$s    train_student.py --method at --arch $S --teacher $t $AT $C100 $STUDENT_SCHEDULE --seed $s
    run $D/kd-$S-from-$T-s$s    train_student.py --method kd --arch $S --teacher $t $KD $C100 $STUDENT_SCHEDULE --seed $s
    run $D/at+kd-$S-from-$T-s$s train_student.py --method at+kd --arch $S --teacher $t $AT $KD $C100 $STUDENT_SCHEDULE --seed $s
    for k in $K_SWEEP; do
      p=$D/para-$T-k$k-s$s
      run $p                        train_paraphraser.py --teacher $t --k $k $C100 $PARA_SCHEDULE $PARA_HOLDOUT --seed $s
      run $D/ft-$S-from-$T-k$k-s$s  train_student.py --method ft --arch $S --teacher $t --paraphraser $p $FT $C100 $STUDENT_SCHEDULE --seed $s
    done
    for kind in cae rae; do
      p=$D/para-$T-$kind-s$s
      run $p                          train_paraphraser.py --teacher $t --kind $kind $C100 $PARA_SCHEDULE $PARA_HOLDOUT --seed $s
      run $D/ft-$S-from-$T-$kind-s$s  train_student.py --method ft --arch $S --teacher $t --paraphraser $p $FT $C100 $STUDENT_SCHEDULE --seed $s
    done
    run $D/ft+kd-$S-from-$T-k0.5-s$s  train_student.py --method ft+kd --arch $S --teacher $t --paraphraser $D/para-$T-k0.5-s$s $FT $KD $C100 $STUDENT_SCHEDULE --seed $s
  done
done
schedule

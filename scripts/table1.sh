#!/usr/bin/env bash
# Table 1, CIFAR-10: student alone, AT, KD, FT, AT+KD, FT+KD and the teacher for four
# student/teacher pairs; FT over the k sweep (the table's FT = the best k) and with the
# CAE and RAE paraphrasers.  FT+KD uses k = 0.5, the paper's default k.  Also multi-group
# FT for ResNet-56 -> ResNet-20 (every group, k = 0.5), which the paper reports as 7.01 %.
#     scripts/table1.sh                     # settings: scripts/lib.sh, docs/reproducing.md
#     python scripts/report.py runs --table 1
source "$(dirname "$0")/lib.sh"

D=$D10 PAIRS=$(pairs 1)
for s in $(seeds); do
  for pair in $PAIRS; do
    S=${pair%:*} T=${pair#*:}
    # VGG-13's last block is 2x2, WRN-46-4's 8x8: the factor is taken from the group of
    # equal size, group 2 of both (WRN-46-4's last, VGG-13's third, 256x8x8).
    G="" g=""
    if [[ $S == vgg13 ]]; then G="--group 2" g="-g2"; fi
    t=$D/teacher-$T-s$s
    run $t                  train_teacher.py --arch $T $C10 $TEACHER_SCHEDULE --seed $s
    run $D/ce-$S-s$s        train_student.py --method ce --arch $S $C10 $STUDENT_SCHEDULE --seed $s
    run $D/at-$S-from-$T-s$s    train_student.py --method at --arch $S --teacher $t $AT $C10 $STUDENT_SCHEDULE --seed $s
    run $D/kd-$S-from-$T-s$s    train_student.py --method kd --arch $S --teacher $t $KD $C10 $STUDENT_SCHEDULE --seed $s
    run $D/at+kd-$S-from-$T-s$s train_student.py --method at+kd --arch $S --teacher $t $AT $KD $C10 $STUDENT_SCHEDULE --seed $s
    for k in $K_SWEEP; do
      p=$D/para-$T$g-k$k-s$s
      run $p                          train_paraphraser.py --teacher $t --k $k $G $C10 $PARA_SCHEDULE $PARA_HOLDOUT --seed $s
      run $D/ft-$S-from-$T$g-k$k-s$s  train_student.py --method ft --arch $S --teacher $t --paraphraser $p $FT $C10 $STUDENT_SCHEDULE --seed $s
    done
    for kind in cae rae; do
      p=$D/para-$T$g-$kind-s$s
      run $p                            train_paraphraser.py --teacher $t --kind $kind $G $C10 $PARA_SCHEDULE $PARA_HOLDOUT --seed $s
      run $D/ft-$S-from-$T$g-$kind-s$s  train_student.py --method ft --arch $S --teacher $t --paraphraser $p $FT $C10 $STUDENT_SCHEDULE --seed $s
    done
    run $D/ft+kd-$S-from-$T$g-k0.5-s$s  train_student.py --method ft+kd --arch $S --teacher $t --paraphraser $D/para-$T$g-k0.5-s$s $FT $KD $C10 $STUDENT_SCHEDULE --seed $s
  done
  # Multi-group FT (the paper, Sec. 4.1: ResNet-56 -> ResNet-20 with FT on all three groups,
  # 7.01 %): a k = 0.5 paraphraser and a translator per group, the FT losses summed.
  t=$D/teacher-resnet56-s$s
  for g in 0 1; do
    run $D/para-resnet56-g$g-k0.5-s$s  train_paraphraser.py --teacher $t --k 0.5 --group $g $C10 $PARA_SCHEDULE $PARA_HOLDOUT --seed $s
  done
  run $D/ft-resnet20-from-resnet56-all-k0.5-s$s  train_student.py --method ft --ft-groups all --arch resnet20 --teacher $t \
      --paraphraser $D/para-resnet56-g0-k0.5-s$s $D/para-resnet56-g1-k0.5-s$s $D/para-resnet56-k0.5-s$s $FT $C10 $STUDENT_SCHEDULE --seed $s
done
schedule

#!/usr/bin/env bash
# Table 4, ablation on CIFAR-10 and CIFAR-100, WRN-40-1 student, WRN-40-2 teacher, k = 0.5:
# paraphraser yes/no x translator yes/no, and paraphraser encoders of 1, 2, 3 layers.
# Without a translator the student's own map (64 channels) is matched to the factor
# (k * 128 = 64 channels); without a paraphraser the translator's output is matched to the
# teacher's map itself.  ONLY=^cifar10/ (or ^folder/) runs one dataset.
#     scripts/table4.sh ; python scripts/report.py runs --table 4
source "$(dirname "$0")/lib.sh"

S=wrn_40_1 T=wrn_40_2
for s in $(seeds); do
  for dataset in 10 100; do
    if [[ $dataset == 10 ]]; then D=$D10 DATA=$C10; else D=$D100 DATA=$C100; fi
    t=$D/teacher-$T-s$s
    run $t                   train_teacher.py --arch $T $DATA $TEACHER_SCHEDULE --seed $s
    run $D/ce-$S-s$s         train_student.py --method ce --arch $S $DATA $STUDENT_SCHEDULE --seed $s
    run $D/ft-$S-from-$T-nopara-s$s    train_student.py --method ft --arch $S --teacher $t --no-paraphraser $FT $DATA $STUDENT_SCHEDULE --seed $s
    run $D/ft-$S-from-$T-k0.5-notrans-s$s train_student.py --method ft --arch $S --teacher $t --paraphraser $D/para-$T-k0.5-s$s --no-translator $FT $DATA $STUDENT_SCHEDULE --seed $s
    for layers in 1 2 3; do
      L="-L$layers" LAYERS="--layers $layers"
      if [[ $layers == 3 ]]; then L="" LAYERS=""; fi   # the paper's paraphraser, the run of Table 2
      p=$D/para-$T-k0.5$L-s$s
      run $p                          train_paraphraser.py --teacher $t --k 0.5 $LAYERS $DATA $PARA_SCHEDULE $PARA_HOLDOUT --seed $s
      run $D/ft-$S-from-$T-k0.5$L-s$s train_student.py --method ft --arch $S --teacher $t --paraphraser $p $FT $DATA $STUDENT_SCHEDULE --seed $s
    done
  done
done
schedule
